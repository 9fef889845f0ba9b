"""Long-tail probes end to end: real scikit-learn models in a real MLflow registry (temporary SQLite store),
`probes build` and `probe` through the CLI and the real Prefect flow, alerts delivered to a PagerDuty-style
receiver on 127.0.0.1.

The classifier tells six Austen novels apart, trained on a long-tailed share of each (600 ... 20 examples).
The "thinned" version is trained on the same data with its three rarest classes cut to 3 examples each:
its head holds and its tail falls, the early-collapse signature.
"""

import json
from collections import Counter

import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from flows.cli import main
from monitors.demo import probe_models as demo_models
from monitors.demo.simulate import _fit_classifier, long_tail_split
from tests.conftest import write_jsonl

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


@pytest.fixture
def store(isolated, monkeypatch, receiver):
    uri = f"sqlite:///{isolated}/.collapse-monitor/mlflow.db"
    (isolated / ".collapse-monitor").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # registration uses MLflow's fluent API, as the demo does
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents+http://{KEY}@127.0.0.1:{receiver.port}/v2/enqueue")
    client = MlflowClient(uri)
    exp = client.create_experiment("training", artifact_location=(isolated / "train-artifacts").as_uri())
    return client, exp


def _probe(capsys, *args) -> tuple[int, dict]:
    code = main(["probe", *args, "--json"])
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1, out
    return code, json.loads(out[0])


def _firing(result: dict) -> dict[str, str]:
    return {a["rule"]: a["severity"] for a in result["alerts"] if a["status"] == "firing"}


def _events(receiver, since: int = 0) -> list[tuple[str, str]]:
    return [(e["json"]["event_action"], e["json"].get("payload", {}).get("summary", e["json"]["dedup_key"]))
            for e in receiver.received[since:]]


def test_tail_drop_fires_once_and_lineage_depth(isolated, split, store, receiver, capsys):
    client, exp = store
    heldout = write_jsonl(isolated / "heldout.jsonl", [{"id": r["id"], "text": r["text"], "label": r["book"]}
                                                       for r in split["test"]])
    train = write_jsonl(isolated / "train.jsonl", [{"id": r["id"], "text": r["text"], "label": r["book"]}
                                                   for r in split["train"]])
    probes = isolated / "probes.jsonl"
    assert main(["probes", "build", "--input", str(heldout), "--frequencies", str(train), "--out", str(probes)]) == 0
    built = capsys.readouterr().out
    assert "wrote 240 probes" in built and "head 40, torso 80, tail 120" in built
    rows = [json.loads(line) for line in probes.read_text().splitlines()]
    slice_of = {r["label"]: r["slice"] for r in rows}
    order = split["order"]
    assert [slice_of[b] for b in order] == ["head", "torso", "torso", "tail", "tail", "tail"]

    # v1 healthy, v2 thinned (trained on v1's data minus most of the tail; its teacher is v1), v2 in production
    demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf",
                                    tags=demo_models.lineage_tags("classifier", None, 0.0))
    demo_models.register_classifier(client, split["thinned"], experiment_id=exp, name="clf", alias="production",
                                    tags=demo_models.lineage_tags("classifier", "models:/clf/1", 0.3))
    code, r = _probe(capsys, "--model", "models:/clf@production", "--probes", str(probes))
    assert code == 3, r
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
    assert ("trigger", "[FIRING] critical probe_tail_collapse on models/clf") in _events(receiver)

    # MLflow: the current run and the baseline run of v1, in the model's experiment
    model_exp = client.get_experiment_by_name("collapse-monitor/models/clf")
    runs = client.search_runs([model_exp.experiment_id])
    kinds = Counter((x.data.tags["collapse.kind"], x.data.tags["collapse.model_version"]) for x in runs)
    assert kinds == Counter({("probe", "2"): 1, ("probe-baseline", "1"): 1})
    current = next(x for x in runs if x.data.tags["collapse.kind"] == "probe")
    assert current.data.tags["collapse.alert.probe_tail_collapse"] == "firing"
    assert current.data.metrics["probe.tail.accuracy"] == pytest.approx(ind["probe.tail.accuracy"])
    outputs = json.loads(open(client.download_artifacts(current.info.run_id, "probes/outputs.json", str(isolated))).read())
    assert len(outputs) == 240 and {"id", "slice", "label", "predicted", "confidence"} <= set(outputs[0])

    # The same version again: the stored results are reused, the alert is still firing, nobody is paged again.
    before = len(receiver.received)
    code, again = _probe(capsys, "--model", "models:/clf@production", "--probes", str(probes))
    assert code == 3 and again["previous"]["evaluated_now"] is False
    assert again["indicators"]["probe.tail.accuracy"] == ind["probe.tail.accuracy"]
    assert again["notifications"] == [] and len(receiver.received) == before

    # v3: retrained on v2's labels (teacher v2, whose teacher is v1): depth 2 fires; its tail is back, so the
    # tail alert resolves.
    demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf", alias="production",
                                    tags=demo_models.lineage_tags("classifier", "models:/clf/2", 1.0))
    code, v3 = _probe(capsys, "--model", "models:/clf@production", "--probes", str(probes))
    assert code == 0, v3
    assert v3["lineage"]["depth"] == 2
    assert v3["lineage"]["chain"] == ["models:/clf/3", "models:/clf/2", "models:/clf/1"]
    assert _firing(v3) == {"recursive_distillation": "warning"}
    assert {a["rule"]: a["status"] for a in v3["alerts"]}["probe_tail_collapse"] == "resolved"
    actions = [(e["json"]["event_action"], e["json"]["dedup_key"]) for e in receiver.received[before:]]
    tail_fp = next(a["fingerprint"] for a in v3["alerts"] if a["rule"] == "probe_tail_collapse")
    assert ("resolve", tail_fp) in actions


def test_broken_alias_and_raising_model_alert_without_crashing(isolated, split, store, receiver, capsys):
    client, exp = store
    probes = write_jsonl(isolated / "probes.jsonl", [
        {"id": f"p{i}", "text": r["text"], "label": r["book"], "slice": s}
        for i, (r, s) in enumerate(zip(split["test"][:30], ["head", "torso", "tail"] * 10))])

    demo_models.register_classifier(client, split["healthy"], experiment_id=exp, name="clf", alias="production")
    code = main(["probe", "--model", "models:/clf@staging", "--probes", str(probes)])
    err = capsys.readouterr().err
    assert code == 2
    assert "models:/clf@staging: 'clf' has no alias @staging (aliases: @production)" in err and "Traceback" not in err
    failed = [e for e in receiver.received if e["json"]["event_action"] == "trigger"]
    assert failed and failed[-1]["json"]["payload"]["summary"] == "[FIRING] critical probe_failed on models/clf"
    assert "has no alias @staging" in failed[-1]["json"]["payload"]["custom_details"]["summary"]

    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(name="model", python_model=RaisingModel(), pip_requirements=["pandas"])
    version = mlflow.register_model(info.model_uri, "broken").version
    code = main(["probe", "--model", f"models:/broken/{version}", "--probes", str(probes)])
    err = capsys.readouterr().err
    assert code == 2
    assert "raised RuntimeError on predict: the weights file is corrupt" in err and "Traceback" not in err
    assert receiver.received[-1]["json"]["payload"]["summary"] == "[FIRING] critical probe_failed on models/broken"

    # The schedule goes on: the next good probe of clf works and resolves clf's probe_failed alert.
    code, ok = _probe(capsys, "--model", "models:/clf@production", "--probes", str(probes))
    assert code == 0 and ok["probe_set"]["examples"] == {"head": 10, "torso": 10, "tail": 10}
    assert [(n["kind"], n["rule"]) for n in ok["notifications"]] == [("resolved", "probe_failed")]
    assert receiver.received[-1]["json"]["event_action"] == "resolve"
    code, again = _probe(capsys, "--model", "models:/clf@production", "--probes", str(probes))
    assert code == 0 and again["alerts"] == [] and again["notifications"] == [], "the same version twice: nothing"
    assert again["indicators"]["probe.all.accuracy"] == ok["indicators"]["probe.all.accuracy"]

    # A broken previous version does not stop the probe of the new one; the note says what is missing.
    demo_models.register_classifier(client, split["thinned"], experiment_id=exp, name="broken", alias="production")
    code, v2 = _probe(capsys, "--model", "models:/broken@production", "--probes", str(probes))
    assert code == 0 and v2["previous"] is None and v2["version"] == "2"
    assert any("previous version 1 could not be evaluated" in n and "RuntimeError" in n for n in v2["notes"])

    # A probe set that does not fit the model is a clear input error that names the file and record.
    bad = write_jsonl(isolated / "bad.jsonl", [{"id": "a", "text": "some text", "slice": "head"},
                                               {"id": "b", "text": "more text", "slice": "middle", "label": "x"}])
    assert main(["probe", "--model", "models:/clf@production", "--probes", str(bad)]) == 2
    assert f"probe set {bad}, record 1: no 'label'" in capsys.readouterr().err
