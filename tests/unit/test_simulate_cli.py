"""``collapse-monitor simulate``: the n-gram text lineage, the diversity metrics and the command's contract for
the pure scenarios (no Prefect, no MLflow: seconds). The text scenario through the real flow is
tests/integration/test_simulate_text.py."""

from __future__ import annotations

import json
import random

import pytest

from flows import simulate
from flows.cli import main
from monitors.demo.simulate import NGramGenerator, text_lineage, tokens


@pytest.fixture(scope="module")
def human(austen):
    return [p["text"] for p in austen[:400]]


def test_ngram_orders_and_truncation(human):
    rng = random.Random(0)
    tri = NGramGenerator(order=3).fit(human)
    assert all(len(ctx) == 2 for ctx in tri.table_)
    docs = tri.sample(20, rng)
    assert len(docs) == 20 and all(tokens(d) for d in docs)
    # each document is exactly as long as a training document: the length distribution has no bias of its own
    assert {len(tokens(d)) for d in docs} <= set(tri.lengths_)
    greedy = NGramGenerator(order=2, top_k=1).fit(human)
    assert all(len(words) == 1 for words, _ in greedy.table_.values())  # top-1: one successor per context
    greedy_docs = sorted(greedy.sample(5, random.Random(1)), key=len)
    assert all(greedy_docs[-1].startswith(d) for d in greedy_docs)  # greedy: one text, cut at different lengths
    nucleus = NGramGenerator(order=2, top_p=0.5).fit(human)
    full = NGramGenerator(order=2).fit(human)
    assert sum(len(w) for w, _ in nucleus.table_.values()) < 0.5 * sum(len(w) for w, _ in full.table_.values())
    with pytest.raises(ValueError, match="top_p"):
        NGramGenerator(top_p=1.5)


def test_text_lineage_loses_types_under_replace_and_keeps_them_under_accumulate(human):
    rep = [m.types_ for _, m, _ in text_lineage(human, 3, "replace", seed=0)]
    acc = [m.types_ for _, m, _ in text_lineage(human, 3, "accumulate", seed=0)]
    mix = [m.types_ for _, m, _ in text_lineage(human, 3, "mix", human_share=0.5, seed=0)]
    assert rep[0] == acc[0] == mix[0]
    assert rep[0] > rep[1] > rep[2]
    assert acc == [acc[0]] * 3  # every word of the human data stays in the training set
    assert rep[2] < mix[2] < acc[2]


def test_diversity_of_a_collapsed_sample_is_lower(human):
    gens = {t: s for t, _, s in text_lineage(human, 4, "replace", seed=0)}
    first, last = simulate.diversity(gens[1][:150]), simulate.diversity(gens[4][:150])
    assert last["self_bleu"] > first["self_bleu"]
    assert last["hapax_share"] < first["hapax_share"]


def _json(argv, capsys) -> tuple[int, dict]:
    code = main(argv)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


def test_simulate_zipf_json_is_one_object_with_every_policy(capsys):
    code, out = _json(["simulate", "zipf", "--generations", "3", "--samples", "5000", "--vocab", "500", "--top-p",
                       "0.9", "--json"], capsys)
    assert code == 0 and out["scenario"] == "zipf"
    assert set(out["policies"]) == {"replace", "mix:0.1", "accumulate"} == set(out["truncated"])
    types = [r["types"] for r in out["policies"]["replace"]]
    assert types[0] == 500 and types[3] < types[1]
    assert out["truncated"]["replace"][3]["tail_mass"] < out["policies"]["replace"][3]["tail_mass"]


def test_simulate_gaussian_and_regression_print_measured_next_to_theory(capsys):
    assert main(["simulate", "gaussian", "--generations", "3", "--repeats", "200", "--policy", "replace"]) == 0
    out = capsys.readouterr().out
    assert "((n-1)/n)^t" in out and "0.7290" in out  # theory at generation 3 for n=10
    assert main(["simulate", "regression", "--generations", "2", "--repeats", "50", "--policy", "accumulate"]) == 0
    assert "pi^2/6" in capsys.readouterr().out


@pytest.mark.parametrize("argv, named", [
    (["simulate", "gaussian", "--policy", "mix:2"], "--policy"),
    (["simulate", "text", "--batch-docs", "900", "--samples", "500"], "--batch-docs"),
    (["simulate", "text", "--reference-docs", "7000"], "--reference-docs"),
    (["simulate", "zipf", "--top-p", "0"], "--top-p"),
    (["simulate", "gaussian", "--generations", "0"], "--generations"),
])
def test_bad_options_exit_2_naming_the_option(argv, named, capsys):
    code, out = _json([*argv, "--json"], capsys)
    assert code == 2 and named in out["error"]
