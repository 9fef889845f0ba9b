"""Great Expectations adapter: evaluate the rule suite on one run's indicators.

GX decides which expectations fail; results are turned into our own :class:`~monitors.core.rules.Alert`
objects here and nowhere else. GX is imported lazily (3-4 s) so that commands that never evaluate
rules do not pay for it.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

from monitors.core.errors import RulesError
from monitors.core.rules import Alert, RuleSuite, firing_alert, parse_rules


def load_rules(path: str | Path) -> RuleSuite:
    """Read and check a rule suite (a GX suite JSON); a problem raises :class:`RulesError` naming the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesError(f"rule suite {path} does not exist (setting rules_path)") from None
    except json.JSONDecodeError as exc:
        raise RulesError(f"rule suite {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return parse_rules(raw, path)


def suite_from_json(raw: dict[str, Any], name: str | None = None):
    """A GX suite from its JSON form (ids dropped, optionally renamed); the caller's dict is not changed.

    GX drops an expectation it cannot load with only a logged traceback, so the count is checked.
    """
    import great_expectations as gx

    data = copy.deepcopy(raw)  # GX mutates what it is given
    data.pop("id", None)
    for exp in data.get("expectations", []):
        exp.pop("id", None)
    if name is not None:
        data["name"] = name
    suite = gx.ExpectationSuite(**data)
    if len(suite.expectations) != len(raw["expectations"]):
        raise RulesError(f"Great Expectations dropped expectations while loading suite {raw.get('name')!r}")
    return suite


@functools.cache
def _batch_definition():
    """One ephemeral GX context per process: creating one costs time and logs a line each time."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # Its INFO line about a temporary docs folder reaches the console through Prefect's handler otherwise.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("collapse_indicators").add_dataframe_asset("run")
    return asset.add_batch_definition_whole_dataframe("one_run")


def evaluate(suite: RuleSuite, indicators: dict[str, float | None], dataset: str) -> list[Alert]:
    """Firing alerts for every rule whose expectation fails on this run's indicators.

    An indicator that is missing or nan does not fire (GX ignores nulls); it is no evidence either way.
    """
    import pandas as pd

    row = {c: indicators.get(c) for c in suite.columns}
    row = {c: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)) for c, v in row.items()}
    frame = pd.DataFrame([row], columns=suite.columns, dtype="float64")
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite_from_json(suite.raw))
    by_name = {r.name: r for r in suite.rules}
    alerts = []
    for res in result.results:
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"rule {res.expectation_config.meta.get('rule')}: {res.exception_info.get('exception_message')}")
        if not res.success:
            rule = by_name[res.expectation_config.meta["rule"]]
            alerts.append(firing_alert(rule, row[rule.column], dataset))
    return alerts
