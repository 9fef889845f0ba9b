"""The memorization probe's math (monitors/core/memorization.py) on toy models whose answers are known, and on
the shipped n-gram generators (monitors/demo/ngram.py) trained on a seeded Austen sample."""

import json
import math
import random

import numpy as np
import pytest

from monitors.core import memorization as M
from monitors.core.errors import InputError
from monitors.demo.corpus import austen_paragraphs
from monitors.demo.ngram import NgramGenerator


# -- exposure ------------------------------------------------------------------------------------------------
class ValueModel:
    """A toy scorer whose log-likelihood of a secret is minus its value as a number: secret 000 is the most
    likely, 999 the least, so in a 3-digit space the secret of value v has rank v + 1 exactly."""

    def __call__(self, texts):
        ll = np.array([-float("".join(t.split("is ", 1)[1].split())) for t in texts])
        return ll, np.ones(len(texts))


def _inputs(canaries, training=({"text": "x " * 80},), candidates=2000, heldout=None):
    plan = M.Plan("train.jsonl", None, "canaries.jsonl", prefix=4, suffix=4, candidates=candidates)
    return M.Inputs(plan, tuple(training), heldout, tuple(canaries), "digest")


def test_exposure_on_a_toy_model_whose_ranks_are_known():
    space = M.CanarySpace(length=3)  # |R| = 1000, ranked in full (2000 candidates >= 1000)
    canaries = [M.Canary("a", "0 0 0", 1, space), M.Canary("b", "0 0 7", 10, space), M.Canary("c", "9 9 9", 100, space)]
    metrics, artifact, notes = M.evaluate(_inputs(canaries), lambda prompts, n: ["x"] * len(prompts), ValueModel())
    by_id = {c["id"]: c for c in artifact["canaries"]}
    # 000 beats every candidate: rank 1, exposure log2 1000; 007 is beaten by 001..006 (000 is a canary, not
    # a candidate): rank 7; 999 is beaten by the 997 other candidates: rank 998
    assert [by_id[i]["rank"] for i in "abc"] == [1, 7, 998]
    assert all(by_id[i]["method"] == "exact" and by_id[i]["of"] == 997 for i in "abc")
    assert by_id["a"]["exposure"] == pytest.approx(math.log2(1000))
    assert by_id["b"]["exposure"] == pytest.approx(math.log2(1000) - math.log2(7))
    assert by_id["c"]["exposure"] == pytest.approx(math.log2(1000 / 998))
    assert metrics["memorization.max_exposure"] == pytest.approx(math.log2(1000))
    assert metrics["memorization.mean_exposure.repeats_10"] == pytest.approx(math.log2(1000 / 7))
    assert metrics["memorization.canaries"] == 3


def test_a_large_space_is_extrapolated_with_a_skew_normal_fit():
    rng = np.random.default_rng(0)
    candidate_ll = -rng.normal(50.0, 5.0, 2000)  # log-perplexities ~ N(50, 5)
    sample = M.CandidateSample(tuple("x" * 2000), exact=False)
    # a canary 3 standard deviations more likely than the candidates: P(X <= 35) = 0.00135, -log2 = 9.53 bits
    out = M.exposures(np.array([-35.0, -80.0]), candidate_ll, sample, 10**9)
    assert out[0]["method"] == "extrapolated" and out[0]["exposure"] == pytest.approx(-math.log2(0.0013499), abs=0.75)  # a fitted tail
    assert out[1]["exposure"] == pytest.approx(0.0, abs=1e-3)  # less likely than them all
    # beyond the sample: the fit says more than the sample's rank could (log2 2000 = 11 bits; 4 sd: 14.9 bits),
    # and never more than log2 |R|
    far = M.exposures(np.array([-30.0, 0.0]), candidate_ll, sample, 10**9)
    assert far[0]["rank"] == 1 and 12 < far[0]["exposure"] < 18
    assert far[1]["exposure"] == pytest.approx(math.log2(10**9))


def test_exposure_from_rank_and_candidates_exclude_the_canaries():
    assert M.exposure_from_rank(1, 2**20) == 20 and M.exposure_from_rank(2**20, 2**20) == 0
    space = M.CanarySpace(length=2)
    sample = M.candidates(space, 500, random.Random(0), ["1 2"])
    assert sample.exact and len(sample.secrets) == 99 and "1 2" not in sample.secrets
    big = M.candidates(M.CanarySpace(), 300, random.Random(0), [])
    assert not big.exact and len(big.secrets) == 300


def test_a_model_without_loglik_gets_extraction_but_no_exposure_with_a_note():
    space = M.CanarySpace(length=3)
    rows = [{"id": "r", "text": "one two three four five six seven eight nine"}]
    metrics, artifact, notes = M.evaluate(_inputs([M.Canary("a", "0 0 0", 1, space)], rows),
                                          lambda prompts, n: ["five six seven eight"] * len(prompts),
                                          lambda texts: "model m cannot score text (task=loglik: KeyError)")
    assert metrics["memorization.extraction_rate"] == 1.0 and "memorization.max_exposure" not in metrics
    assert artifact["canaries"] is None
    assert any("cannot score text" in n and "no canary exposure" in n for n in notes)
    assert any("no --heldout" in n for n in notes) and math.isnan(metrics["memorization.excess"])


# -- canaries ------------------------------------------------------------------------------------------------
def test_canaries_are_distinct_secrets_with_cycled_repeats_and_round_trip():
    cans = M.make_canaries(6, [1, 10, 100], random.Random(3))
    assert [c.repeats for c in cans] == [1, 10, 100, 1, 10, 100] and len({c.secret for c in cans}) == 6
    assert all(c.text.startswith("my secret code is ") and len(c.secret.split()) == 9 for c in cans)
    rows = [json.loads(json.dumps(M.canary_row(c))) for c in cans]
    assert rows[0]["space"]["size"] == 10**9 and M.parse_canaries(rows, "c.jsonl") == cans
    assert M.planted(["a"], cans).count(cans[2].text) == 100
    with pytest.raises(InputError, match=r"canaries c.jsonl, record 1: secret must be 9 symbols"):
        M.parse_canaries([{**rows[0], "secret": "1 2 x"}], "c.jsonl")
    with pytest.raises(InputError, match="record 2: id 'canary-001' appears twice"):
        M.parse_canaries([rows[0], rows[0]], "c.jsonl")


# -- extraction ------------------------------------------------------------------------------------------------
def test_split_record_and_edit_similarity():
    prompt, truth = M.split_record("Yes, she said. It was  over now!", 4, 3)
    assert prompt == "Yes, she said" and truth == [".", "It", "was"]
    assert M.split_record("too short", 4, 3) is None
    assert M.edit_similarity(list("abcd"), list("abxd")) == 0.75 and M.edit_similarity([], []) == 1.0
    assert M.edit_similarity(list("abcd"), list("ab")) == 0.5


@pytest.fixture(scope="module")
def austen_split():
    rows = [r for r in austen_paragraphs() if len(M.tokens(r["text"])) >= 70]
    random.Random(7).shuffle(rows)
    return rows[:150], rows[150:300]


def _extraction(generator, train, held, sample=80):
    plan = M.Plan("train.jsonl", "held.jsonl", None, sample=sample)
    inputs = M.Inputs(plan, tuple(train), tuple(held), None, "d")
    return M.evaluate(inputs, lambda prompts, n: [generator.continue_text(p, n, greedy=True) for p in prompts], None)


def test_the_unsmoothed_8gram_gives_back_its_training_records_and_not_held_out_ones(austen_split):
    train, held = austen_split
    metrics, artifact, _ = _extraction(NgramGenerator(8, 0.0).fit([r["text"] for r in train]), train, held)
    assert metrics["memorization.records"] == 80 and metrics["memorization.control_records"] == 80
    assert metrics["memorization.extraction_rate"] >= 0.8
    assert metrics["memorization.control_rate"] <= 0.05
    assert metrics["memorization.excess"] >= 0.75
    assert {r["split"] for r in artifact["records"]} == {"training", "heldout"}


def test_the_smoothed_bigram_gives_back_nothing(austen_split):
    train, held = austen_split
    metrics, _, _ = _extraction(NgramGenerator(2, 1.0).fit([r["text"] for r in train]), train, held)
    assert metrics["memorization.extraction_rate"] <= 0.1 and metrics["memorization.extraction_rate_similar"] <= 0.1
    assert abs(metrics["memorization.excess"]) <= 0.1


def test_exposure_grows_with_planting_on_the_smoothed_model_and_is_full_on_the_memorizer(austen_split):
    train, _ = austen_split
    cans = M.make_canaries(6, [1, 100], random.Random(1))
    texts = M.planted([r["text"] for r in train[:60]], cans)
    inputs = M.Inputs(M.Plan("t", None, "c", candidates=500), tuple(train[:60]), None, tuple(cans), "d")
    found = {}
    for name, gen in (("memorizer", NgramGenerator(8, 0.0)), ("smoothed", NgramGenerator(2, 1.0))):
        gen.fit(texts)
        found[name], _, _ = M.evaluate(inputs, lambda prompts, n: [""] * len(prompts),
                                       lambda t, g=gen: (np.array([g.loglik(x)[0] for x in t]), np.ones(len(t))))
    assert found["memorizer"]["memorization.mean_exposure.repeats_1"] >= 25  # of log2 1e9 = 29.9 bits
    smoothed = found["smoothed"]
    assert smoothed["memorization.mean_exposure.repeats_1"] < 5 < smoothed["memorization.mean_exposure.repeats_100"]


def test_the_ngram_state_is_plain_json_and_round_trips():
    gen = NgramGenerator(5, 0.0).fit(["the cat sat on the mat.", "the dog sat on the log."])
    state = json.loads(json.dumps(gen.to_dict()))
    again = NgramGenerator.from_dict(state)
    assert again.continue_text("the dog sat", 4, greedy=True) == gen.continue_text("the dog sat", 4, greedy=True)
    assert again.continue_text("the dog sat", 4, greedy=True) == "on the log."
    assert again.loglik("the cat sat") == gen.loglik("the cat sat") and math.isfinite(again.loglik("zebra")[0])


# -- the command line (no MLflow, no Prefect: these stop before either starts) -----------------------------
def test_probes_canaries_writes_the_file_and_rejects_bad_repeats(isolated, capsys):
    from flows.cli import main

    out = isolated / "canaries.jsonl"
    assert main(["probes", "canaries", "--out", str(out), "--count", "4", "--repeats", "1,10", "--seed", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["repeats"] for r in rows] == [1, 10, 1, 10] and "wrote 4 canaries" in capsys.readouterr().out
    assert M.parse_canaries(rows, str(out))[0].space.size == 10**9
    assert main(["probes", "canaries", "--out", str(out), "--repeats", "1,ten"]) == 2
    assert "--repeats '1,ten'" in capsys.readouterr().err
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows, "a failed run leaves the file alone"


@pytest.mark.parametrize("args, message", [
    ([], "nothing to probe: give --probes PATH"),
    (["--training", "t.jsonl"], "--training is an option of the memorization probe: add --memorization"),
    (["--memorization"], "--memorization needs --training PATH"),
    (["--memorization", "--training", "t.jsonl", "--prefix", "0"], "--prefix (0)"),
])
def test_probe_usage_errors_come_before_anything_starts(isolated, capsys, args, message):
    from flows.cli import main

    assert main(["probe", "--model", "models:/writer@production", *args]) == 2
    assert message in capsys.readouterr().err


def test_json_artifacts_escape_markup_and_read_back_the_same():
    from monitors.adapters.tracking import to_json_text

    data = {"records": [{"prompt": "<script>alert(1)</script> & \\<b>", "similarity": float("nan")}]}
    text = to_json_text(data)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"records": [{"prompt": "<script>alert(1)</script> & \\<b>", "similarity": None}]}


def test_the_ngram_generators_register_quietly_without_pickles_and_answer_greedily(tmp_path, capfd, monkeypatch):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from monitors.demo import probe_models as demo_models

    # through the environment, as the CLI does, never mlflow.set_tracking_uri: its module global would outlive
    # this test and send later tests' fluent calls (model registration) to this store
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp = client.create_experiment("models", artifact_location=(tmp_path / "art").as_uri())
    gen = NgramGenerator(5, 0.0).fit(["the cat sat on the mat.", "the dog sat on the log."])
    capfd.readouterr()
    assert demo_models.register_ngram_generator(client, gen, experiment_id=exp, name="ng", alias="production") == "1"
    out, err = capfd.readouterr()
    assert "Created version" not in out + err and "CloudPickle" not in out + err
    assert not [p for p in (tmp_path / "art").rglob("*.pkl")], "a model was pickled"
    model = mlflow.pyfunc.load_model("models:/ng@production")
    assert {p.name for p in model.metadata.get_params_schema().params} == {"task", "seed", "greedy", "max_words"}
    made = model.predict(pd.DataFrame({"text": ["the dog sat"]}), params={"greedy": True, "max_words": 4})
    assert made == ["on the log."]
    scored = model.predict(pd.DataFrame({"text": ["the cat sat"]}), params={"task": "loglik"})
    assert scored["loglik"].iloc[0] == pytest.approx(gen.loglik("the cat sat")[0])
