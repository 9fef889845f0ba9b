"""Long-tail probes end to end: real scikit-learn models in a real MLflow registry (temporary SQLite store),
`probes build` and `probe` through the CLI and the real Prefect flow, alerts delivered to a PagerDuty-style
receiver on 127.0.0.1.

The classifier tells six Austen novels apart, trained on a long-tailed share of each (600 ... 20 examples).
The "thinned" version is trained on the same data with its three rarest classes cut to 3 examples each:
its head holds and its tail falls, the early-collapse signature.
"""

import contextlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from flows.cli import main
from monitors.demo import probe_models as demo_models
from monitors.demo.simulate import _fit_classifier, long_tail_split
from tests.conftest import Receiver, write_jsonl

pytestmark = pytest.mark.integration

TRAIN_COUNTS = (600, 300, 150, 80, 40, 20)
KEY = "probe-routing-key"


class RaisingModel(mlflow.pyfunc.PythonModel):
    """A registered model whose predict always fails (corrupt weights, a missing feature, ...)."""

    def predict(self, context, model_input, params=None):
        raise RuntimeError("the weights file is corrupt")


@pytest.fixture(scope="module")
def split(austen):
    train, test, _ = long_tail_split(austen, "book", TRAIN_COUNTS, 40, seed=3)
    order = [b for b, _ in Counter(r["book"] for r in train).most_common()]
    rare = set(order[3:])
    seen = Counter()
    thinned = []
    for r in train:
        seen[r["book"]] += 1
        if r["book"] not in rare or seen[r["book"]] <= 3:
            thinned.append(r)
    pairs = lambda rows: [(r["text"], r["book"]) for r in rows]  # noqa: E731
    return {"train": train, "test": test, "order": order,
            "healthy": _fit_classifier(pairs(train)), "thinned": _fit_classifier(pairs(thinned))}


class Story:
    """A sequence of CLI calls on one MLflow store with a real receiver, run once per module; the tests below
    each assert one behaviour of what it recorded (so the first failure does not hide the rest)."""

    def __init__(self, root: Path, receiver: Receiver, client: MlflowClient, exp: str):
        self.root, self.receiver, self.client, self.exp = root, receiver, client, exp
        self.steps: dict[str, tuple[int, str, str]] = {}
        self.facts: dict = {}

    def run(self, name: str, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--state-dir", str(self.root / ".collapse-monitor"), *argv])
        self.steps[name] = (code, out.getvalue(), err.getvalue())
        return self.steps[name]

    def json(self, name: str) -> dict:
        lines = [ln for ln in self.steps[name][1].splitlines() if ln.strip()]
        assert len(lines) == 1, lines
        return json.loads(lines[0])

    def code(self, name: str) -> int:
        return self.steps[name][0]


@contextlib.contextmanager
def _story(tmp_path_factory, name: str):
    root = tmp_path_factory.mktemp(name)
    receiver = Receiver()
    saved = dict(os.environ)  # the CLI points MLflow and Prefect at its state dir through os.environ
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            uri = f"sqlite:///{root}/.collapse-monitor/mlflow.db"
            (root / ".collapse-monitor").mkdir()
            mp.setenv("MLFLOW_TRACKING_URI", uri)  # registration uses MLflow's fluent API, as the demo does
            mp.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://{KEY}@127.0.0.1:{receiver.port}/v2/enqueue")
            client = MlflowClient(uri)
            exp = client.create_experiment("training", artifact_location=(root / "train-artifacts").as_uri())
            yield Story(root, receiver, client, exp)
    finally:
        receiver.close()
        os.environ.clear()
        os.environ.update(saved)


def _firing(result: dict) -> dict[str, str]:
    return {a["rule"]: a["severity"] for a in result["alerts"] if a["status"] == "firing"}


def _events(receiver, since: int = 0) -> list[tuple[str, str]]:
    return [(e["json"]["event_action"], e["json"].get("payload", {}).get("summary", e["json"]["dedup_key"]))
            for e in receiver.received[since:]]


@pytest.fixture(scope="module")
def lineage(split, tmp_path_factory):
    """probes build; v1 healthy, v2 thinned (teacher v1) in production, probed twice; v3 retrained on v2's labels."""
    with _story(tmp_path_factory, "lineage") as st:
        root, client, exp = st.root, st.client, st.exp
        heldout = write_jsonl(root / "heldout.jsonl", [{"id": r["id"], "text": r["text"], "label": r["book"]}
                                                       for r in split["test"]])
        train = write_jsonl(root / "train.jsonl", [{"id": r["id"], "text": r["text"], "label": r["book"]}
                                                   for r in split["train"]])
        probes = root / "probes.jsonl"
        st.run("build", "probes", "build", "--input", str(heldout), "--frequencies", str(train), "--out", str(probes))
        st.facts["rows"] = [json.loads(line) for line in probes.read_text().splitlines()]
        demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf",
                                        tags=demo_models.lineage_tags("classifier", None, 0.0))
        demo_models.register_classifier(client, split["thinned"], experiment_id=exp, name="clf", alias="production",
                                        tags=demo_models.lineage_tags("classifier", "models:/clf/1", 0.3))
        st.run("v2", "probe", "--model", "models:/clf@production", "--probes", str(probes), "--json")
        st.facts["events_v2"] = _events(st.receiver)
        model_exp = client.get_experiment_by_name("collapse-monitor/models/clf")
        st.facts["runs"] = client.search_runs([model_exp.experiment_id])
        current = next(x for x in st.facts["runs"] if x.data.tags["collapse.kind"] == "probe")
        st.facts["outputs"] = json.loads(open(client.download_artifacts(current.info.run_id, "probes/outputs.json",
                                                                        str(root))).read())
        st.facts["before_again"] = len(st.receiver.received)
        st.run("v2_again", "probe", "--model", "models:/clf@production", "--probes", str(probes), "--json")
        st.facts["after_again"] = len(st.receiver.received)
        demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf", alias="production",
                                        tags=demo_models.lineage_tags("classifier", "models:/clf/2", 1.0))
        st.run("v3", "probe", "--model", "models:/clf@production", "--probes", str(probes), "--json")
        st.facts["actions_v3"] = [(e["json"]["event_action"], e["json"]["dedup_key"])
                                  for e in st.receiver.received[st.facts["after_again"]:]]
    return st  # every step ran above: the tests read what they recorded, with the environment restored


def test_probes_build_slices_by_class_frequency(lineage, split):
    code, out, _ = lineage.steps["build"]
    assert code == 0 and "wrote 240 probes" in out and "head 40, torso 80, tail 120" in out
    slice_of = {r["label"]: r["slice"] for r in lineage.facts["rows"]}
    assert [slice_of[b] for b in split["order"]] == ["head", "torso", "torso", "tail", "tail", "tail"]


def test_a_thinned_tail_fires_the_critical_tail_alert_once(lineage):
    r = lineage.json("v2")
    assert lineage.code("v2") == 3, r
    assert r["version"] == "2" and r["kind"] == "classifier"
    assert r["previous"] == {"version": "1", "run_id": r["previous"]["run_id"], "evaluated_now": True}
    assert r["first"]["version"] == "1"
    ind = r["indicators"]
    assert ind["probe.tail.accuracy.delta_prev"] < -0.1, "thinning the rare classes must cost the tail"
    assert ind["probe.head.drop_prev"] <= 0.05, "while the head holds"
    assert ind["probe.early_collapse"] == pytest.approx(ind["probe.tail.drop_prev"])
    assert ind["probe.tail_head_ratio.delta_prev"] < 0
    for sl in ("head", "torso", "tail", "all"):
        assert 0 <= ind[f"probe.{sl}.accuracy"] <= 1 and 0 <= ind[f"probe.{sl}.macro_f1"] <= 1
        assert 0 <= ind[f"probe.{sl}.ece"] <= 1
    assert _firing(r)["probe_tail_collapse"] == "critical"
    assert r["lineage"]["depth"] == 1 and "recursive_distillation" not in _firing(r)
    assert [n["rule"] for n in r["notifications"] if n["kind"] == "firing"].count("probe_tail_collapse") == 1
    assert ("trigger", "[FIRING] critical probe_tail_collapse on models/clf") in lineage.facts["events_v2"]


def test_the_probe_and_the_previous_versions_baseline_are_runs_of_the_models_experiment(lineage):
    ind = lineage.json("v2")["indicators"]
    runs = lineage.facts["runs"]
    kinds = Counter((x.data.tags["collapse.kind"], x.data.tags["collapse.model_version"]) for x in runs)
    assert kinds == Counter({("probe", "2"): 1, ("probe-baseline", "1"): 1})
    current = next(x for x in runs if x.data.tags["collapse.kind"] == "probe")
    assert current.data.tags["collapse.alert.probe_tail_collapse"] == "firing"
    assert current.data.metrics["probe.tail.accuracy"] == pytest.approx(ind["probe.tail.accuracy"])
    outputs = lineage.facts["outputs"]
    assert len(outputs) == 240 and {"id", "slice", "label", "predicted", "confidence"} <= set(outputs[0])


def test_the_same_version_again_reuses_stored_results_and_pages_nobody(lineage):
    again, first = lineage.json("v2_again"), lineage.json("v2")
    assert lineage.code("v2_again") == 3 and again["previous"]["evaluated_now"] is False
    assert again["indicators"]["probe.tail.accuracy"] == first["indicators"]["probe.tail.accuracy"]
    assert again["notifications"] == [] and lineage.facts["after_again"] == lineage.facts["before_again"]


def test_a_second_distillation_fires_and_the_recovered_tail_resolves(lineage):
    v3 = lineage.json("v3")
    assert lineage.code("v3") == 0, v3
    assert v3["lineage"]["depth"] == 2
    assert v3["lineage"]["chain"] == ["models:/clf/3", "models:/clf/2", "models:/clf/1"]
    assert _firing(v3) == {"recursive_distillation": "warning"}
    assert {a["rule"]: a["status"] for a in v3["alerts"]}["probe_tail_collapse"] == "resolved"
    tail_fp = next(a["fingerprint"] for a in v3["alerts"] if a["rule"] == "probe_tail_collapse")
    assert ("resolve", tail_fp) in lineage.facts["actions_v3"]


@pytest.fixture(scope="module")
def failures(split, tmp_path_factory):
    """A broken alias, a model whose predict raises, the next good probe, a broken previous version, a bad set."""
    with _story(tmp_path_factory, "failures") as st:
        root, client, exp = st.root, st.client, st.exp
        probes = write_jsonl(root / "probes.jsonl", [
            {"id": f"p{i}", "text": r["text"], "label": r["book"], "slice": s}
            for i, (r, s) in enumerate(zip(split["test"][:30], ["head", "torso", "tail"] * 10))])
        demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf", alias="production")
        st.run("alias", "probe", "--model", "models:/clf@staging", "--probes", str(probes))
        st.facts["alias_pages"] = [e for e in st.receiver.received if e["json"]["event_action"] == "trigger"]
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(name="model", python_model=RaisingModel(), pip_requirements=["pandas"])
        version = mlflow.register_model(info.model_uri, "broken").version
        st.run("raising", "probe", "--model", f"models:/broken/{version}", "--probes", str(probes))
        st.facts["raising_page"] = st.receiver.received[-1]["json"]
        st.run("good", "probe", "--model", "models:/clf@production", "--probes", str(probes), "--json")
        st.facts["good_page"] = st.receiver.received[-1]["json"]
        st.run("good_again", "probe", "--model", "models:/clf@production", "--probes", str(probes), "--json")
        demo_models.register_classifier(client, split["thinned"], experiment_id=exp, name="broken", alias="production")
        st.run("broken_previous", "probe", "--model", "models:/broken@production", "--probes", str(probes), "--json")
        bad = write_jsonl(root / "bad.jsonl", [{"id": "a", "text": "some text", "slice": "head"},
                                               {"id": "b", "text": "more text", "slice": "middle", "label": "x"}])
        st.facts["bad"] = bad
        st.run("bad_set", "probe", "--model", "models:/clf@production", "--probes", str(bad))
    return st  # every step ran above: the tests read what they recorded, with the environment restored


def test_a_broken_alias_is_a_probe_failed_page_not_a_crash(failures):
    code, _, err = failures.steps["alias"]
    assert code == 2
    assert "models:/clf@staging: 'clf' has no alias @staging (aliases: @production)" in err and "Traceback" not in err
    pages = failures.facts["alias_pages"]
    assert pages and pages[-1]["json"]["payload"]["summary"] == "[FIRING] critical probe_failed on models/clf"
    assert "has no alias @staging" in pages[-1]["json"]["payload"]["custom_details"]["summary"]


def test_a_model_that_raises_is_a_probe_failed_page_not_a_crash(failures):
    code, _, err = failures.steps["raising"]
    assert code == 2
    assert "raised RuntimeError on predict: the weights file is corrupt" in err and "Traceback" not in err
    assert failures.facts["raising_page"]["payload"]["summary"] == "[FIRING] critical probe_failed on models/broken"


def test_the_next_good_probe_resolves_probe_failed_and_the_same_version_twice_is_quiet(failures):
    ok, again = failures.json("good"), failures.json("good_again")
    assert failures.code("good") == 0 and ok["probe_set"]["examples"] == {"head": 10, "torso": 10, "tail": 10}
    assert [(n["kind"], n["rule"]) for n in ok["notifications"]] == [("resolved", "probe_failed")]
    assert failures.facts["good_page"]["event_action"] == "resolve"
    assert failures.code("good_again") == 0 and again["alerts"] == [] and again["notifications"] == []
    assert again["indicators"]["probe.all.accuracy"] == ok["indicators"]["probe.all.accuracy"]


def test_a_broken_previous_version_does_not_stop_the_probe_of_the_new_one(failures):
    v2 = failures.json("broken_previous")
    assert failures.code("broken_previous") == 0 and v2["previous"] is None and v2["version"] == "2"
    assert any("previous version 1 could not be evaluated" in n and "RuntimeError" in n for n in v2["notes"])


def test_a_probe_set_that_does_not_fit_the_model_names_the_file_and_record(failures):
    code, _, err = failures.steps["bad_set"]
    assert code == 2 and f"probe set {failures.facts['bad']}, record 1: no 'label'" in err
