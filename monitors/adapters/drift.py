"""Evidently adapter: drift of a batch's sample against the reference's sample, parsed into indicators.

Per-document descriptors (computed here, offline) and the raw text column go into one Evidently
``DataDriftPreset`` report. Raw-text drift is Evidently's domain classifier (ROC AUC of telling batch from
reference: 0.5 = indistinguishable); descriptors get Evidently's default per-column drift score. The
report is parsed into flat ``drift.*`` indicators here and nowhere else; alert bands for them come from the
reference's own variability (:mod:`monitors.core.bands`), not from Evidently's thresholds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
_SENT = re.compile(r"[.!?]+(?:\s|$)")
DESCRIPTORS = ("chars", "words", "mean_word_len", "non_letter_share", "sentences", "distinct_word_share")


#: Shown at the top of the stored report: Evidently's page judges each column by its own p-value test, which on
#: two honest human samples often says "drifted"; collapse-monitor judges by bands fitted on the reference.
VERDICT_NOTE = ("Not collapse-monitor's verdict: the 'Drift detected' and 'Drifted columns' verdicts on this page "
                "are Evidently's default per-column tests (p-values, or the text classifier's ROC AUC at 0.55), "
                "which ignore how much the reference itself varies. collapse-monitor reads only the drift "
                "scores from this report and judges them against bands fitted on the reference's own "
                "pseudo-batches: see the run's drift.* metrics, their .z companions and alerts.json.")
_NOTE_HTML = ('<div style="font:14px sans-serif;background:#fff3cd;border:1px solid #c9a227;padding:10px 14px;'
              'margin:8px">' + VERDICT_NOTE + "</div>")


@dataclass(frozen=True)
class DriftReport:
    values: dict[str, float]
    html: str
    json: str


def descriptors(texts: list[str]) -> dict[str, np.ndarray]:
    """Per-document descriptors (pure, offline)."""
    cols: dict[str, list[float]] = {k: [] for k in DESCRIPTORS}
    for t in texts:
        w = _WORD.findall(t.lower())
        cols["chars"].append(len(t))
        cols["words"].append(len(w))
        cols["mean_word_len"].append(sum(map(len, w)) / len(w) if w else 0.0)
        cols["non_letter_share"].append(sum(not c.isalpha() and not c.isspace() for c in t) / len(t) if t else 0.0)
        cols["sentences"].append(max(len(_SENT.findall(t)), 1))
        cols["distinct_word_share"].append(len(set(w)) / len(w) if w else 0.0)
    return {k: np.asarray(v, dtype=float) for k, v in cols.items()}


def _frame(texts: list[str]):
    import pandas as pd

    return pd.DataFrame({"text": texts, **descriptors(texts)})


#: The file in the cache folder (``lm.cache_dir``) that keeps random classifiers' AUC percentiles across checks.
RANDOM_AUC_FILE = "random-auc-percentiles.json"
_RANDOM_AUC_KEPT = 512


def _versions() -> str:
    import evidently
    import sklearn

    return f"numpy {np.__version__}, sklearn {sklearn.__version__}, evidently {evidently.__version__}"


def _random_auc_key(y: np.ndarray, p_value, iter_num, seed) -> str:
    digest = hashlib.sha256(f"{y.dtype.str}{y.shape}{p_value!r}{iter_num!r}{seed!r}{_versions()}".encode() + y.tobytes())
    return digest.hexdigest()[:32]


def _read_kept(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def _keep(path: Path | None, key: str, value: float) -> None:
    """Add one percentile to the file (written whole and replaced atomically; the oldest go past
    ``_RANDOM_AUC_KEPT``). A cache: a write that fails is only a later recomputation."""
    if path is None:
        return
    try:
        kept = _read_kept(path)
        kept.pop(key, None)
        kept[key] = float(value).hex()
        kept = dict(list(kept.items())[-_RANDOM_AUC_KEPT:])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def _state_after_random_auc(n: int, iter_num: int, seed) -> None:
    """NumPy's global random state as Evidently's computation leaves it: its last step seeds with the last of
    its seeds and draws ``n`` numbers (``roc_auc_score`` draws none)."""
    np.random.seed(seed)
    seeds = np.random.randint(0, iter_num * 10, size=iter_num)
    np.random.seed(seeds[-1])
    np.random.rand(n)


@contextmanager
def _random_auc_computed_once(cache_dir: Path | None = None):
    """Evidently's text drift compares the domain classifier's AUC with the 95th percentile of 1000 random
    classifiers' AUCs on the same test labels, and a report asks for it three times (two metrics and the
    rendering) with the same labels: 3000 sklearn ``roc_auc_score`` calls, most of a check's Evidently time.
    Within one report the result is kept per labels and arguments (and NumPy's global random state is left as
    the computation leaves it), and sklearn's parameter validation, which changes nothing, is skipped. The
    numbers are the same bit for bit.

    The labels depend only on the two samples' sizes (Evidently splits them with a fixed seed), so with
    ``cache_dir`` the percentile is also kept on disk (:data:`RANDOM_AUC_FILE`, keyed by the labels, the
    arguments and the NumPy, scikit-learn and Evidently versions): checks of batches of the usual size then
    skip the 1000 AUCs (about 1.5 s) altogether."""
    import sklearn
    from evidently.legacy.utils import data_drift_utils as ddu

    original = ddu.roc_auc_random_classifier_percentile
    done: dict = {}
    path = Path(cache_dir) / RANDOM_AUC_FILE if cache_dir is not None else None

    def percentile(y_test, p_value=0.05, iter_num=1000, seed=42):
        y = np.asarray(y_test)
        key = (y.dtype.str, y.shape, y.tobytes(), p_value, iter_num, seed)
        if key not in done:
            disk_key = _random_auc_key(y, p_value, iter_num, seed) if path is not None else ""
            stored = _read_kept(path).get(disk_key)
            if isinstance(stored, str):
                value = np.float64(float.fromhex(stored))
                _state_after_random_auc(len(y), iter_num, seed)
            else:
                with sklearn.config_context(skip_parameter_validation=True):
                    value = original(y_test, p_value=p_value, iter_num=iter_num, seed=seed)
                _keep(path, disk_key, value)
            done[key] = (value, np.random.get_state())
        value, state = done[key]
        np.random.set_state(state)
        return value

    ddu.roc_auc_random_classifier_percentile = percentile
    try:
        yield
    finally:
        ddu.roc_auc_random_classifier_percentile = original


def import_evidently() -> None:
    """Import what a report needs, ahead of the first one (a worker process warming up)."""
    import evidently  # noqa: F401
    import pandas  # noqa: F401
    from evidently.legacy.utils import data_drift_utils  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401


def _run(current: list[str], reference: list[str], cache_dir: Path | None = None):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    logging.getLogger("evidently").setLevel(logging.WARNING)
    definition = DataDefinition(text_columns=["text"], numerical_columns=list(DESCRIPTORS))
    report = Report([DataDriftPreset()])
    with _random_auc_computed_once(cache_dir):
        return report.run(current_data=Dataset.from_pandas(_frame(current), data_definition=definition),
                          reference_data=Dataset.from_pandas(_frame(reference), data_definition=definition))


def parse(snapshot_dict: dict[str, Any]) -> dict[str, float]:
    """Flat ``drift.*`` indicators from an Evidently snapshot's ``dict()`` (the input is not changed)."""
    out: dict[str, float] = {}
    for metric in snapshot_dict.get("metrics", []):
        cfg, value = metric.get("config", {}), metric.get("value")
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount") and isinstance(value, dict):
            out["drift.drifted_columns_share"] = float(value.get("share", float("nan")))
        elif kind.endswith("ValueDrift") and isinstance(value, (int, float)):
            column = cfg.get("column")
            out["drift.text_auc" if column == "text" else f"drift.{column}"] = float(value)
    return out


def drift_values(current: list[str], reference: list[str], cache_dir: Path | None = None) -> dict[str, float]:
    """Only the parsed indicators (what band fitting needs); nan-free dict, empty when a side is too small."""
    if len(current) < 10 or len(reference) < 10:
        return {}
    return parse(_run(current, reference, cache_dir).dict())


def drift_report(current: list[str], reference: list[str], cache_dir: Path | None = None) -> DriftReport | None:
    """The report as indicators, HTML and JSON; ``None`` when a side has fewer than 10 documents. ``cache_dir``:
    where computed random-classifier AUC percentiles are kept (see :func:`_random_auc_computed_once`)."""
    if len(current) < 10 or len(reference) < 10:
        return None
    snap = _run(current, reference, cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        snap.save_html(str(path))
        html = path.read_text(encoding="utf-8")
    return DriftReport(parse(snap.dict()), html, snap.json())


def report_artifacts(report: DriftReport) -> dict[str, bytes]:
    """What a check stores of the report: the HTML with :data:`VERDICT_NOTE` first in its body, and the JSON,
    both gzipped (the HTML embeds Evidently's scripts: about 4 MB raw, a sixth of that gzipped)."""
    body = re.search(r"<body[^>]*>", report.html, re.I)
    at = body.end() if body else 0
    html = report.html[:at] + _NOTE_HTML + report.html[at:]
    return {"drift/report.html.gz": gzip.compress(html.encode("utf-8"), mtime=0),
            "drift/report.json.gz": gzip.compress(report.json.encode("utf-8"), mtime=0)}
