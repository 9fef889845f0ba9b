"""Probe sets and probe metrics (monitors/core/probes.py): slicing, loading, per-slice metrics, comparison with
earlier versions, the lineage walk. Figures are computed by hand in the comments."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from monitors.adapters import probe_files
from monitors.core import probes
from monitors.core.errors import InputError
from tests.conftest import write_jsonl


def test_slices_by_frequency_follow_the_cumulative_label_mass():
    # shares before each class: a 0, b .60, c .85, d .95 -> head < .5 <= torso < .8 <= tail
    assert probes.slices_by_frequency(Counter(a=60, b=25, c=10, d=5)) == {"a": "head", "b": "torso", "c": "tail",
                                                                          "d": "tail"}
    with pytest.raises(ValueError):
        probes.slices_by_frequency(Counter(a=1), head_mass=0.9, tail_mass=0.2)


def test_build_by_label_counts_frequencies_in_the_training_data():
    rows = [{"id": f"x{i}", "text": f"text {i}", "label": lab} for i, lab in enumerate("aabbccdd")]
    train = [{"label": lab} for lab in "a" * 60 + "b" * 25 + "c" * 10 + "d" * 5]
    report = probes.build_by_label(rows, "heldout.jsonl", frequencies=train, max_per_class=1)
    assert [(r["id"], r["slice"]) for r in report.rows] == [("x0", "head"), ("x2", "torso"), ("x4", "tail"),
                                                           ("x6", "tail")]
    assert report.by_slice == {"head": 1, "torso": 1, "tail": 2}
    with pytest.raises(InputError, match=r"heldout.jsonl: label\(s\) \['e'\] never occur"):
        probes.build_by_label(rows + [{"text": "t", "label": "e"}], "heldout.jsonl", frequencies=train)
    with pytest.raises(InputError, match="heldout.jsonl, record 2: no 'label'"):
        probes.build_by_label([rows[0], {"text": "unlabelled"}], "heldout.jsonl")


def test_build_by_tokens_puts_texts_with_rare_words_in_the_tail():
    head = probes.head_vocabulary(["the cat sat on the mat"] * 10 + ["a dog"], head_mass=0.95)
    assert {"the", "cat", "sat", "on", "mat"} <= head and "dog" not in head
    texts = ["the cat sat", "the cat sat on the mat", "the zebu grazed quietly", "the cat and the dog",
             "on the mat", "quokka"]
    report = probes.build_by_tokens([{"text": t} for t in texts], "x", head, head_share=0.5, tail_share=0.34)
    by_text = {r["text"]: r["slice"] for r in report.rows}
    assert by_text["quokka"] == "tail" and by_text["the zebu grazed quietly"] == "tail"
    assert by_text["the cat sat"] == "head" and by_text["on the mat"] == "head"
    assert report.by_slice == {"head": 3, "torso": 1, "tail": 2}


def test_edge_cases_are_merged_into_the_tail_by_default():
    report = probes.BuildReport([{"id": "a", "text": "x", "slice": "head"}], {"head": 1})
    report = probes.merge_edge_cases(report, [{"text": "a rare case", "label": "l"},
                                              {"id": "e2", "text": "hard", "slice": "torso"}], "edge.jsonl")
    assert [(r["id"], r["slice"], r["origin"]) for r in report.rows[1:]] == [("edge-0001", "tail", "edge_case"),
                                                                            ("e2", "torso", "edge_case")]
    assert report.by_slice == {"head": 1, "tail": 1, "torso": 1} and report.edge_cases == 2
    with pytest.raises(InputError, match="edge.jsonl, record 1: id 'a' is already in the probe set"):
        probes.merge_edge_cases(report, [{"id": "a", "text": "dup"}], "edge.jsonl")
    with pytest.raises(InputError, match="edge.jsonl, record 1: slice 'middle'"):
        probes.merge_edge_cases(report, [{"text": "t", "slice": "middle"}], "edge.jsonl")


def test_load_probe_set_names_the_file_and_record(isolated):
    good = write_jsonl(isolated / "p.jsonl", [{"id": "1", "text": "a", "slice": "head", "label": "x"},
                                              {"id": "2", "text": "b", "slice": "tail", "label": "y"}])
    ps = probe_files.load_probe_set(good, "classifier")
    assert ps.counts() == {"head": 1, "tail": 1} and len(ps.digest) == 64
    write_jsonl(isolated / "p2.jsonl", [{"id": "1", "text": "a", "slice": "head", "label": "x"},
                                        {"id": "2", "text": "b", "slice": "tail", "label": "z"}])
    assert probe_files.load_probe_set(isolated / "p2.jsonl", "classifier").digest != ps.digest
    cases = [
        ([{"text": "a", "slice": "head"}, {"text": "b", "slice": "tail"}], "classifier", "record 1: no 'label'"),
        ([{"text": "a", "slice": "head"}, {"text": "  ", "slice": "tail"}], "generator", "record 2: 'text' must be"),
        ([{"text": "a", "slice": "head"}, {"text": "b", "slice": "rare"}], "generator", "record 2: slice 'rare'"),
        ([{"text": "a", "slice": "head"}], "generator", "needs head and tail examples"),
        (["{not json"], "generator", "line 1: not valid JSON"),
    ]
    for rows, kind, message in cases:
        path = write_jsonl(isolated / "bad.jsonl", rows)
        with pytest.raises(InputError, match=message):
            probe_files.load_probe_set(path, kind)
    with pytest.raises(InputError, match="no such file"):
        probe_files.load_probe_set(isolated / "missing.jsonl", "generator")


def test_read_rows_reads_csv(isolated):
    (isolated / "p.csv").write_text("id,text,label\n1,hello,a\n2,world,b\n")
    assert probe_files.read_rows(isolated / "p.csv") == [{"id": "1", "text": "hello", "label": "a"},
                                                    {"id": "2", "text": "world", "label": "b"}]


def _probe_set(slices, labels=None, texts=None):
    rows = [{"id": str(i), "text": (texts or ["t"] * len(slices))[i], "slice": s,
             **({"label": labels[i]} if labels else {})} for i, s in enumerate(slices)]
    return probes.ProbeSet("mem", "d", tuple(rows))


def test_classifier_metrics_per_slice():
    ps = _probe_set(["head"] * 4 + ["tail"] * 2, labels=["a", "a", "a", "b", "c", "d"])
    predicted = ["a", "a", "b", "b", "c", "c"]
    confidence = np.array([0.9, 0.9, 0.9, 0.6, 0.8, 0.8])
    m = probes.classifier_metrics(ps, predicted, confidence)
    assert m["probe.head.accuracy"] == 0.75 and m["probe.tail.accuracy"] == 0.5
    # head: a has P=1 R=2/3 F1=.8, b has P=.5 R=1 F1=2/3 -> macro .7333; tail: c F1 2/3, d 0 -> 1/3
    assert m["probe.head.macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["probe.tail.macro_f1"] == pytest.approx(1 / 3)
    # head ECE: bin .9 holds 3 (acc 2/3, conf .9) -> .75 * .2333; bin .6 holds 1 (acc 1) -> .25 * .4
    assert m["probe.head.ece"] == pytest.approx(0.75 * (0.9 - 2 / 3) + 0.25 * 0.4)
    assert m["probe.all.examples"] == 6 and m["probe.tail.quality"] == 0.5
    assert math.isnan(probes.classifier_metrics(ps, predicted, None)["probe.head.ece"])


def test_generator_metrics_perplexity_and_blandness():
    human = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine said my grandmother",
             "colourless green ideas sleep furiously tonight", "rare words like quokka and zebu live here"]
    ps = _probe_set(["head", "head", "tail", "tail"], texts=human)
    bland = ["the the the the the the the the"] * 4
    ll, tok = np.array([-10.0, -20.0, -30.0, -50.0]), np.array([5.0, 5.0, 10.0, 10.0])
    m = probes.generator_metrics(ps, bland, ll, tok)
    assert m["probe.head.perplexity"] == pytest.approx(math.exp(30 / 10))
    assert m["probe.tail.perplexity"] == pytest.approx(math.exp(80 / 20))
    assert m["probe.tail.quality"] == pytest.approx(1 / math.exp(4))
    assert m["probe.all.distinct_1.ratio"] < 0.3, "one repeated word is far less diverse than the human texts"
    assert m["probe.all.compression_ratio.ratio"] > 1.5
    assert m["probe.all.self_similarity"] == pytest.approx(1.0)  # identical outputs
    varied = probes.generator_metrics(ps, human, None, None)
    assert varied["probe.all.distinct_2.ratio"] == pytest.approx(1.0) and "probe.head.perplexity" not in varied
    assert all(math.isfinite(varied[f"probe.{s}.distinct_{n}"]) for s in ("head", "tail", "all") for n in (1, 2, 3))


def test_compare_finds_the_early_collapse_signature():
    v1 = {"probe.head.quality": 0.90, "probe.tail.quality": 0.60, "probe.tail.accuracy": 0.60}
    tail_fell = {"probe.head.quality": 0.91, "probe.tail.quality": 0.30, "probe.tail.accuracy": 0.30}
    c = probes.compare(tail_fell, v1, v1, head_tolerance=0.05)
    assert c["probe.tail.drop_prev"] == pytest.approx(0.5) and c["probe.early_collapse"] == pytest.approx(0.5)
    assert c["probe.tail.accuracy.delta_prev"] == pytest.approx(-0.3)
    assert c["probe.tail_head_ratio"] == pytest.approx(0.30 / 0.91)
    assert c["probe.tail_head_ratio.delta_first"] == pytest.approx(0.30 / 0.91 - 0.60 / 0.90)
    everything_fell = {"probe.head.quality": 0.70, "probe.tail.quality": 0.30}
    assert probes.compare(everything_fell, v1, None, 0.05)["probe.early_collapse"] == 0.0
    # a slow decline: small against the previous version, large against the first
    prev = {"probe.head.quality": 0.90, "probe.tail.quality": 0.33}
    assert probes.compare(tail_fell, prev, v1, 0.05)["probe.early_collapse"] == pytest.approx(0.5)
    assert math.isnan(probes.compare(tail_fell, None, None, 0.05)["probe.early_collapse"])


def test_follow_lineage_counts_teacher_hops():
    registry = {"m/1": {}, "m/2": {"collapse.teacher": "m/1"}, "m/3": {"collapse.teacher": "m/2"}}
    tags = {"collapse.teacher": "m/3", "collapse.synthetic_fraction": "0.8"}
    lin = probes.follow_lineage("m/4", tags, registry.get)
    assert (lin.depth, lin.chain, lin.synthetic_fraction, lin.note) == (3, ("m/4", "m/3", "m/2", "m/1"), 0.8, "")
    gone = probes.follow_lineage("m/4", {"collapse.teacher": "other/9"}, registry.get)
    assert gone.depth == 1 and "other/9 is not in the registry" in gone.note and math.isnan(gone.synthetic_fraction)
    loop = {"a": {"collapse.teacher": "b"}, "b": {"collapse.teacher": "a"}}
    looped = probes.follow_lineage("a", loop["a"], loop.get)
    assert looped.depth == 1 and "loops back to a" in looped.note


def test_probe_set_file_format_is_what_build_writes(isolated):
    report = probes.build_by_label([{"text": "x", "label": "a"}, {"text": "y", "label": "b"}], "in",
                                   head_mass=0.5, tail_mass=0.5)
    probe_files.write_jsonl(report.rows, isolated / "out" / "p.jsonl")
    rows = [json.loads(line) for line in (isolated / "out" / "p.jsonl").read_text().splitlines()]
    assert rows == [{"id": "probe-000001", "label": "a", "origin": "built", "slice": "head", "text": "x"},
                    {"id": "probe-000002", "label": "b", "origin": "built", "slice": "tail", "text": "y"}]
    assert probe_files.load_probe_set(isolated / "out" / "p.jsonl", "classifier").labels == ["a", "b"]
