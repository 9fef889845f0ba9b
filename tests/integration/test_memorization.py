"""The memorization probe end to end: `probes canaries` and `probe --memorization` through the CLI and the real
Prefect flow, on the shipped n-gram generators in a real MLflow registry (temporary SQLite store), alerts
delivered to a PagerDuty-style receiver on 127.0.0.1.

"Fine-tuning" story: version 1 of `writer` is the smoothed bigram (does not memorize), version 2 the unsmoothed
8-gram (memorizes), both trained on the same Austen records with the canaries planted. A training record holds
hostile markup, which must come out escaped in every artifact.
"""

import json
import random
from pathlib import Path

import mlflow.pyfunc
import pytest

from monitors.core import memorization as M
from monitors.demo import probe_models as demo_models
from monitors.demo.ngram import NgramGenerator
from tests.conftest import write_jsonl
from tests.integration.test_probes import _firing, _story

pytestmark = pytest.mark.integration

HOSTILE = "<script>alert(1)</script>"
MEM = ("--sample", "40", "--candidates", "300")


class NoScoreModel(mlflow.pyfunc.PythonModel):
    """A generator that cannot score text (task=loglik raises) and declares no greedy parameter."""

    def predict(self, context, model_input, params=None):
        if (params or {}).get("task") == "loglik":
            raise NotImplementedError("no scoring")
        return ["and so it went on"] * len(model_input)


@pytest.fixture(scope="module")
def story(tmp_path_factory, austen):
    with _story(tmp_path_factory, "memorization") as st:
        root, client, exp = st.root, st.client, st.exp
        rows = [r for r in austen if len(M.tokens(r["text"])) >= 70]
        random.Random(7).shuffle(rows)
        train = [{"id": r["id"], "text": r["text"]} for r in rows[:60]]
        for r in train[::3]:  # markup inside the prompt of every third record
            words = r["text"].split()
            r["text"] = " ".join(words[:10] + [HOSTILE] + words[10:])
        held = [{"id": r["id"], "text": r["text"]} for r in rows[60:120]]
        st.facts["train"] = write_jsonl(root / "train.jsonl", train)
        st.facts["held"] = write_jsonl(root / "held.jsonl", held)
        canaries = root / "canaries.jsonl"
        st.run("canaries", "probes", "canaries", "--out", str(canaries), "--count", "6", "--repeats", "1,100",
               "--seed", "5")
        st.facts["canary_rows"] = [json.loads(line) for line in canaries.read_text().splitlines()]
        planted = M.planted([r["text"] for r in train], M.parse_canaries(st.facts["canary_rows"], "c"))
        mem = ["--memorization", "--training", str(st.facts["train"]), "--heldout", str(st.facts["held"]),
               "--canaries", str(canaries), *MEM]
        demo_models.register_ngram_generator(client, NgramGenerator(2, 1.0).fit(planted), experiment_id=exp,
                                             name="writer", alias="production")
        st.run("v1", "probe", "--model", "models:/writer@production", *mem, "--json")
        demo_models.register_ngram_generator(client, NgramGenerator(8, 0.0).fit(planted), experiment_id=exp,
                                             name="writer", alias="production")
        st.run("v2", "probe", "--model", "models:/writer@production", *mem, "--json")
        st.facts["pages"] = [e["json"] for e in st.receiver.received]
        probes = write_jsonl(root / "gen-probes.jsonl", [{"id": r["id"], "text": r["text"], "slice": s}
                                                         for r, s in zip(held[:20], ["head", "tail"] * 10)])
        st.run("both", "probe", "--model", "models:/writer/2", "--probes", str(probes), *mem, "--json")
        with mlflow.start_run(experiment_id=exp):
            info = mlflow.pyfunc.log_model(name="model", python_model=NoScoreModel(), pip_requirements=["pandas"])
        mlflow.register_model(info.model_uri, "noscore")
        st.run("noscore", "probe", "--model", "models:/noscore/1", "--kind", "generator", *mem, "--json")
        st.run("no_heldout", "probe", "--model", "models:/writer/1", "--memorization", "--training",
               str(st.facts["train"]), *MEM, "--json")
        st.run("nothing", "probe", "--model", "models:/writer/1")
        st.run("no_training", "probe", "--model", "models:/writer/1", "--memorization")
        model_exp = client.get_experiment_by_name("collapse-monitor/models/writer")
        runs = client.search_runs([model_exp.experiment_id])
        st.facts["runs"] = runs
        files = {}
        for run in runs:
            local = Path(client.download_artifacts(run.info.run_id, "", str(root / "dl" / run.info.run_id)))
            files.update({p: p.read_text(encoding="utf-8") for p in local.rglob("*") if p.is_file()})
        st.facts["artifacts"] = files
    return st


def test_probes_canaries_writes_secrets_with_repeats_and_their_space(story):
    code, out, _ = story.steps["canaries"]
    assert code == 0 and "wrote 6 canaries" in out and "29.9 bits" in out
    rows = story.facts["canary_rows"]
    assert [r["repeats"] for r in rows] == [1, 100] * 3
    assert {r["space"]["size"] for r in rows} == {10**9} and all(r["text"].endswith(r["secret"]) for r in rows)


def test_the_smoothed_model_gives_back_nothing_and_fires_nothing(story):
    r = story.json("v1")
    ind = r["indicators"]
    assert story.code("v1") == 0 and _firing(r) == {}
    assert ind["memorization.records"] == 40 and ind["memorization.control_records"] == 40
    assert ind["memorization.extraction_rate"] <= 0.1 and ind["memorization.control_rate"] <= 0.1
    assert ind["memorization.max_exposure"] < 20
    assert ind["memorization.mean_exposure.repeats_1"] < ind["memorization.mean_exposure.repeats_100"]
    assert not any(k.startswith("probe.") for k in ind), "no probe set, no slice metrics"


def test_the_memorizing_version_fires_warnings_and_the_jump_against_the_previous_version(story):
    r = story.json("v2")
    ind = r["indicators"]
    assert story.code("v2") == 3, r
    assert ind["memorization.extraction_rate"] >= 0.8 and ind["memorization.control_rate"] <= 0.1
    assert ind["memorization.excess"] >= 0.7 and ind["memorization.max_exposure"] > 25
    assert r["previous"] == {"version": "1", "run_id": r["previous"]["run_id"], "evaluated_now": False}
    assert ind["memorization.excess.delta_prev"] >= 0.7
    assert _firing(r) == {"memorization_extraction": "warning", "memorization_canary_exposure": "warning",
                          "memorization_extraction_jump": "critical", "memorization_exposure_jump": "critical"}
    assert "[FIRING] critical memorization_extraction_jump on models/writer" in [
        p["payload"]["summary"] for p in story.facts["pages"] if p["event_action"] == "trigger"]
    exposures = r["memorization"]["exposures"]
    assert len(exposures) == 6 and {e["method"] for e in exposures} == {"extrapolated"}


def test_probes_and_memorization_are_one_run(story):
    r = story.json("both")
    assert story.code("both") == 3
    ind = r["indicators"]
    assert "probe.all.perplexity" in ind and "memorization.extraction_rate" in ind
    run = next(x for x in story.facts["runs"] if x.info.run_id == r["run_id"])
    assert "probe.all.perplexity" in run.data.metrics and "memorization.excess" in run.data.metrics
    assert run.data.tags["collapse.memorization_set"] and run.data.tags["collapse.probe_set"]
    # v1 had a memorization result but none on this probe set: it is evaluated now on both, one baseline run
    assert r["previous"]["version"] == "1" and r["previous"]["evaluated_now"] is True
    base = next(x for x in story.facts["runs"] if x.info.run_id == r["previous"]["run_id"])
    assert base.data.tags["collapse.kind"] == "probe-baseline"
    assert "probe.all.perplexity" in base.data.metrics and "memorization.excess" in base.data.metrics
    assert ind["memorization.excess.delta_prev"] >= 0.7


def test_a_model_without_loglik_gets_extraction_but_no_exposure_with_a_note(story):
    r = story.json("noscore")
    assert story.code("noscore") == 0
    assert r["indicators"]["memorization.extraction_rate"] == 0 and "memorization.max_exposure" not in r["indicators"]
    assert any("cannot score text" in n and "no canary exposure" in n for n in r["notes"])
    assert any("declares no 'greedy' parameter" in n for n in r["notes"])


def test_without_heldout_records_the_control_is_unknown_and_said_so(story):
    r = story.json("no_heldout")
    assert r["indicators"].get("memorization.control_rate") is None and r["indicators"].get("memorization.excess") is None
    assert any("no --heldout records: the control rate" in n for n in r["notes"])


def test_usage_errors_name_what_is_missing(story):
    code, _, err = story.steps["nothing"]
    assert code == 2 and "nothing to probe: give --probes PATH" in err
    code, _, err = story.steps["no_training"]
    assert code == 2 and "--memorization needs --training PATH" in err


def test_hostile_training_text_is_escaped_in_every_artifact(story):
    files = story.facts["artifacts"]
    assert any(p.name == "memorization.json" for p in files) and any(p.name == "summary.json" for p in files)
    leaked = [str(p) for p, text in files.items() if "<script" in text or "</script" in text]
    assert leaked == []
    records = [rec for p, text in files.items() if p.name == "memorization.json" for rec in json.loads(text)["records"]]
    assert any("<" in rec["prompt"] + rec["truth"] for rec in records), "the hostile record was probed"
    for run in story.facts["runs"]:
        assert "<script" not in run.data.tags.get("mlflow.note.content", "")
