"""Numbers at the edges: nan (and inf) mean "not measured" in a run's indicators, and JSON and MLflow want them
gone; durations are written by people (``24h``, ``7d``)."""

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


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``24h``, ``7d``, ``90s`` (a number with one unit)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) if t and t[-1] in units else float("nan")
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"duration {text!r} is not a positive number with a unit (s, m, h, d, w), e.g. 24h")
    return value * units[t[-1]]
