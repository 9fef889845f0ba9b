"""Great Expectations adapter for record-level quality: ``expectations/incoming_batch.json``.

The suite runs on a frame with one row per parsed record, built from the profile's per-record columns, so
it holds no raw text: GX 1.24's Data Docs put unexpected values into HTML unescaped, and nothing from the
data may reach a report that way. Results are parsed into :class:`RecordCheck` rows here and nowhere else;
a failed expectation becomes an alert with the severity from its ``meta``.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitors.core.errors import RulesError
from monitors.core.profile import DATE_ABSENT, DATE_OK, PROV_ABSENT, PROVENANCE, BatchProfile
from monitors.adapters.gx_rules import suite_from_json
from monitors.core.rules import SEVERITIES, Alert, fingerprint

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_SUITE = PACKAGE_ROOT / "expectations" / "incoming_batch.json"
_SEQ = itertools.count()


@dataclass(frozen=True)
class RecordCheck:
    rule: str
    expectation: str
    column: str
    success: bool
    severity: str
    unexpected_count: int | None
    unexpected_percent: float | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RecordQuality:
    checks: list[RecordCheck]
    data_docs_html: str | None

    @property
    def alerts_input(self) -> list[RecordCheck]:
        return [c for c in self.checks if not c.success]


def load_suite(path: str | Path = DEFAULT_SUITE) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"record suite {path} cannot be read: {exc}") from None
    for i, exp in enumerate(raw.get("expectations", [])):
        meta = exp.get("meta") or {}
        if not meta.get("rule") or meta.get("severity") not in SEVERITIES:
            raise RulesError(f"record suite {path}, expectation #{i + 1}: meta.rule and meta.severity ({SEVERITIES}) are required")
    return raw


def record_frame(profile: BatchProfile):
    """One row per parsed record, no raw text (see the module docstring)."""
    import pandas as pd

    c = profile.cols
    ids = pd.array(c["id_hash"].view(np.int64), dtype="Int64")
    ids[~c["has_id"]] = pd.NA
    chars = pd.array(c["text_chars"], dtype="Int64")
    chars[c["text_chars"] < 0] = pd.NA
    valid = pd.array((c["date_state"] == DATE_OK).astype(np.int64), dtype="Int64")
    valid[c["date_state"] == DATE_ABSENT] = pd.NA
    labels = np.array([*PROVENANCE, "other", None], dtype=object)
    prov = labels[np.where(c["provenance"] == PROV_ABSENT, len(labels) - 1, c["provenance"])]
    return pd.DataFrame({"id": ids, "text_chars": chars, "created_at_valid": valid, "provenance": prov,
                         "bad_char_share": c["bad_chars"].astype(np.float64)})


def import_gx() -> None:
    """Import GX and make this process's contexts (records, rules), ahead of the first validation (a worker
    process warming up)."""
    import great_expectations  # noqa: F401
    from great_expectations.checkpoint import UpdateDataDocsAction  # noqa: F401

    from monitors.adapters import gx_rules

    _context()
    gx_rules._batch_definition()


@functools.cache
def _context():
    """One ephemeral GX context per process, with a Data Docs site in a private temporary folder."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    docs_dir = tempfile.mkdtemp(prefix=f"cm-gx-docs-{os.getpid()}-")  # the pid: a later start removes it if killed
    atexit.register(shutil.rmtree, docs_dir, True)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(site_name="collapse_monitor", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    batch_def = ctx.data_sources.add_pandas("incoming").add_dataframe_asset("records").add_batch_definition_whole_dataframe("batch")
    return ctx, batch_def, Path(docs_dir)


def validate(profile: BatchProfile, suite_raw: dict[str, Any], *, data_docs: bool = True) -> RecordQuality:
    """Validate the batch's records with GX; Data Docs HTML of the validation when ``data_docs``."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    ctx, batch_def, docs_dir = _context()
    name = f"incoming_batch_{os.getpid()}_{next(_SEQ)}"
    suite = ctx.suites.add(suite_from_json(suite_raw, name))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch_def, suite=suite))
    actions = [UpdateDataDocsAction(name="docs", site_names=["collapse_monitor"])] if data_docs else []
    cp = ctx.checkpoints.add(gx.Checkpoint(name=name, validation_definitions=[vd], actions=actions))
    result = cp.run(batch_parameters={"dataframe": record_frame(profile)})
    checks = []
    for run in result.run_results.values():
        for res in run.results:
            cfg = res.expectation_config
            if res.exception_info and res.exception_info.get("raised_exception"):
                raise RulesError(f"record suite, {cfg.meta.get('rule')}: {res.exception_info.get('exception_message')}")
            r = res.result or {}
            checks.append(RecordCheck(
                rule=cfg.meta["rule"], expectation=cfg.type, column=cfg.kwargs.get("column", ""), success=bool(res.success),
                severity=cfg.meta["severity"], unexpected_count=r.get("unexpected_count"),
                unexpected_percent=r.get("unexpected_percent"), summary=cfg.meta.get("summary", ""),
            ))
    html = None
    if data_docs:
        pages = sorted((docs_dir / "validations").rglob("*.html"), key=lambda p: p.stat().st_mtime)
        html = pages[-1].read_text(encoding="utf-8") if pages else None
        shutil.rmtree(docs_dir / "validations", ignore_errors=True)
    ctx.checkpoints.delete(name)
    ctx.validation_definitions.delete(name)
    ctx.suites.delete(name)
    return RecordQuality(checks, html)


def alerts(quality: RecordQuality, dataset: str) -> list[Alert]:
    return [Alert(rule=c.rule, severity=c.severity, status="firing", fingerprint=fingerprint(c.rule, dataset),
                  value=c.unexpected_percent, threshold=None, summary=c.summary, dataset=dataset)
            for c in quality.checks if not c.success]
