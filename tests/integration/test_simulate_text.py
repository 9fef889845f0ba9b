"""``collapse-monitor simulate text`` end to end: the n-gram lineage, each generation's sample checked by the
real ``check_incoming_data`` flow (Prefect ephemeral API, a temporary MLflow store), replace against accumulate.

Small on purpose (one 800-paragraph reference, 250-document batches, 3 generations) and without the Evidently
drift report (``indicators.drift`` off: fitting its bands is two thirds of a reference build here; no critical
rule reads it), so about a minute on 2 cores. Nucleus sampling (top-p 0.9) as generators decode in practice:
untruncated refitting thins the tails too slowly for 3 generations of this size (see the README's simulator
table for the untruncated lead times).
"""

import json

import pytest
from mlflow import MlflowClient

from flows.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    import contextlib
    import io
    import os

    state = tmp_path_factory.mktemp("sim-state")
    out = io.StringIO()
    cwd = os.getcwd()
    saved = dict(os.environ)  # the CLI points MLflow and Prefect at its state dir through os.environ
    os.chdir(state)
    os.environ["COLLAPSE_MONITOR_INDICATORS__DRIFT"] = "false"
    try:
        with contextlib.redirect_stdout(out):
            code = main(["simulate", "text", "--generations", "3", "--policy", "replace", "--policy", "accumulate",
                         "--top-p", "0.9", "--samples", "600", "--batch-docs", "250", "--reference-docs", "800",
                         "--json", "--state-dir", str(state)])
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    assert len(lines) == 1, out.getvalue()  # exactly one JSON object on stdout
    return code, json.loads(lines[0]), state


def test_replace_fires_a_critical_alert_and_accumulate_does_not(simulated):
    code, out, _ = simulated
    assert code == 0  # alerts are the simulation's results, not a failure
    rep, acc = out["policies"]["replace"], out["policies"]["accumulate"]
    assert rep["first_critical"] is not None and rep["first_critical"] <= 3, rep["lead_times"]
    assert acc["first_critical"] is None, acc["lead_times"]
    # the tails go first: rare-word coverage falls faster under replace
    cov = {p: [g["indicators"]["tail.rare_coverage.ratio"] for g in out["policies"][p]["generations"]]
           for p in ("replace", "accumulate")}
    assert cov["replace"][2] < cov["accumulate"][2]
    assert [g["model_types"] for g in rep["generations"]] == sorted((g["model_types"] for g in rep["generations"]), reverse=True)


def test_each_policy_is_its_own_mlflow_experiment_with_one_check_per_generation(simulated):
    _, out, state = simulated
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    for policy in ("replace", "accumulate"):
        dataset = out["policies"][policy]["dataset"]
        assert dataset == f"sim-text-{policy}"
        exp = client.get_experiment_by_name(f"collapse-monitor/{dataset}")
        runs = client.search_runs([exp.experiment_id])
        ids = {g["run_id"] for g in out["policies"][policy]["generations"]}
        assert {r.info.run_id for r in runs} == ids and len(ids) == 3
    assert all(g["self_bleu"] > 0 and 0 < g["hapax_share"] < 1 for g in out["policies"]["replace"]["generations"])
