"""Evidently adapter: drift of a batch's sample against the reference's sample, parsed into indicators.

Per-document descriptors (computed here, offline) and the raw text column go into one Evidently
``DataDriftPreset`` report. Raw-text drift is Evidently's domain classifier (ROC AUC of telling batch from
reference: 0.5 = indistinguishable); descriptors get Evidently's default per-column drift score. The
report is parsed into flat ``drift.*`` indicators here and nowhere else; alert bands for them come from the
reference's own variability (:mod:`monitors.bands`), not from Evidently's thresholds.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")
_SENT = re.compile(r"[.!?]+(?:\s|$)")
DESCRIPTORS = ("chars", "words", "mean_word_len", "non_letter_share", "sentences", "distinct_word_share")


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


def _run(current: list[str], reference: list[str]):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    logging.getLogger("evidently").setLevel(logging.WARNING)
    definition = DataDefinition(text_columns=["text"], numerical_columns=list(DESCRIPTORS))
    report = Report([DataDriftPreset()])
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


def drift_values(current: list[str], reference: list[str]) -> dict[str, float]:
    """Only the parsed indicators (what band fitting needs); nan-free dict, empty when a side is too small."""
    if len(current) < 10 or len(reference) < 10:
        return {}
    return parse(_run(current, reference).dict())


def drift_report(current: list[str], reference: list[str]) -> DriftReport | None:
    """The report as indicators, HTML and JSON; ``None`` when a side has fewer than 10 documents."""
    if len(current) < 10 or len(reference) < 10:
        return None
    snap = _run(current, reference)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift.html"
        snap.save_html(str(path))
        html = path.read_text(encoding="utf-8")
    return DriftReport(parse(snap.dict()), html, snap.json())
