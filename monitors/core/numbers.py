"""Missing numbers: nan (and inf) mean "not measured" in a run's indicators; JSON and MLflow want them gone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def is_finite(v: Any) -> bool:
    """A real, finite number (bools excluded)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def finite_or_none(v: Any) -> Any:
    """nan and inf as None (JSON null); anything else unchanged."""
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def finite_items(values: Mapping[str, float | None]) -> dict[str, float]:
    """Only the entries with a finite value, as floats (what MLflow can log as a metric)."""
    return {k: float(v) for k, v in values.items() if is_finite(v)}


def json_safe(data: Any) -> Any:
    """``data`` with every nan/inf float, however deep in dicts, lists and tuples, replaced by None."""
    if isinstance(data, float):
        return finite_or_none(data)
    if isinstance(data, dict):
        return {k: json_safe(x) for k, x in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(x) for x in data]
    return data
