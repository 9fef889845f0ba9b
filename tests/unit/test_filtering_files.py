"""The filter's files (monitors.adapters.filtering): records as they came plus their score, in every format,
and an output folder that is replaced whole or not at all."""

import gzip
import json

import pandas as pd
import pytest

from monitors.adapters import filtering
from monitors.adapters.sources import Row


def _row(raw: bytes) -> Row:
    return Row(1, json.loads(raw), None, raw, 0)


def test_a_jsonl_line_keeps_its_bytes_and_gets_the_score_before_its_brace():
    raw = b'{"id": "a",   "text": "caf\\u00e9 <b>", "n": 1.50}  '
    line = filtering.output_line(_row(raw), 0.25)
    assert line == b'{"id": "a",   "text": "caf\\u00e9 <b>", "n": 1.50, "synthetic_score": 0.25}\n'
    assert json.loads(line)["text"] == "caf\u00e9 <b>"


def test_a_record_that_already_has_the_key_is_rewritten_not_duplicated():
    line = filtering.output_line(_row(b'{"id": "a", "text": "x", "synthetic_score": "old"}'), -1.5)
    assert line.count(b"synthetic_score") == 1 and json.loads(line)["synthetic_score"] == -1.5


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "csv", "parquet"])
def test_every_output_format_holds_every_record_with_its_score(isolated, fmt):
    parts = []
    for k in range(2):
        part = isolated / f"part{k}.jsonl"
        part.write_bytes(b"".join(filtering.output_line(_row(json.dumps({"id": f"{k}-{i}", "text": f"t {i}"}).encode()),
                                                        i / 10) for i in range(30)))
        parts.append(str(part))
    (isolated / "empty.jsonl").write_bytes(b"")
    out = isolated / f"kept{filtering.FORMAT_SUFFIX[fmt]}"
    assert filtering.write_output(parts + [str(isolated / "empty.jsonl")], out, fmt) == 60
    if fmt == "parquet":
        df = pd.read_parquet(out)
    elif fmt == "csv":
        df = pd.read_csv(out)
    else:
        opener = gzip.open if fmt == "jsonl.gz" else open
        with opener(out, "rt", encoding="utf-8") as fh:
            df = pd.DataFrame([json.loads(x) for x in fh])
    assert list(df["id"]) == [f"{k}-{i}" for k in range(2) for i in range(30)]  # in order
    assert list(df.columns)[-1] == "synthetic_score" and df["synthetic_score"].iloc[3] == pytest.approx(0.3)


def test_no_record_still_writes_a_readable_file(isolated):
    (isolated / "none.jsonl").write_bytes(b"")
    for fmt in ("parquet", "csv"):
        out = isolated / f"flagged{filtering.FORMAT_SUFFIX[fmt]}"
        assert filtering.write_output([str(isolated / "none.jsonl")], out, fmt) == 0
        assert len(pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)) == 0


def test_publishing_replaces_an_earlier_run_and_its_other_format(isolated):
    out = isolated / "out"
    out.mkdir()
    (out / "kept.parquet").write_bytes(b"old run, other format")
    (out / "notes.txt").write_text("the user's own file")
    stage = filtering.staging(out)
    for name in ("kept.jsonl", "flagged.jsonl", "quarantine.jsonl"):
        (stage / name).write_text(name)
    placed = filtering.publish(stage, out, {"kept": "kept.jsonl", "flagged": "flagged.jsonl",
                                            "quarantine": "quarantine.jsonl"}, {"records": 2})
    assert sorted(p.name for p in out.iterdir()) == ["filter.json", "flagged.jsonl", "kept.jsonl", "notes.txt",
                                                     "quarantine.jsonl"]
    assert json.loads((out / "filter.json").read_text())["files"] == placed
    assert not stage.exists()


def test_the_flagged_sample_page_escapes_the_data():
    page = filtering.examples_html([{"id": "<i>", "score": 1.0, "text": "<script>alert(1)</script> & <img src=x>"}], "t")
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
