"""Ingest: every unusable record is quarantined with a reason, file and line; the rest is checked."""

import gzip
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import fsspec
import numpy as np
import pandas as pd
import pytest

from monitors.config import Columns, IngestSettings
from monitors.core.errors import InputError
from monitors.adapters.ingest import ReadOptions, late_duplicate_entries, profile_input
from tests.conftest import write_jsonl

COLS, ING = Columns(), IngestSettings(max_text_chars=1000)


def _read(spec, cols=COLS, ing=ING, **kw):
    prof, shards = profile_input(str(spec), ReadOptions(cols, ing, 1000, date(2024, 1, 1)), **kw)
    entries = prof.entries + list(late_duplicate_entries(prof, shards, cols.id))
    return prof, sorted(entries, key=lambda e: (e["file"], e["line"]))


def _ids(prof):
    return sorted(i for _, i, _ in prof.sample)


def test_hostile_jsonl_quarantines_each_bad_record_with_a_reason_and_keeps_the_rest(isolated):
    good = [{"id": f"ok{i}", "text": f"a perfectly good record number {i}", "created_at": "2023-05-01"} for i in range(3)]
    path = write_jsonl(isolated / "b.jsonl", [json.dumps(good[0]), '{"id": "cut", "text": "this line was trunc'])
    with path.open("ab") as fh:
        fh.write(b'{"id": "utf", "text": "bad \xff\xfe bytes"}\n')
        fh.write(b"\x00\x01\x02binary junk\x9c\n")
        for row in [
            {"id": "script", "text": "<script>alert(1)</script> hides in this text"},
            {"id": "big", "text": "x" * 50_000_000},  # a 50 MB single record
            {"id": "empty", "text": "   "},
            {"id": "num", "text": 42},
            {"id": "notext"},
            {"id": "date", "text": "fine text", "created_at": "next tuesday"},
            {"id": "prov", "text": "fine text", "provenance": "robot"},
            good[0],
            good[1],
            [1, 2],
            {"id": "ctl", "text": "\u0000\u0001\u0002\u0003 junk \u0004\u0005"},
        ]:
            fh.write((json.dumps(row) + "\n").encode())
        fh.write((json.dumps(good[2]) + "\n").encode())
    prof, entries = _read(path)
    assert _ids(prof) == ["ok0", "ok1", "ok2"]
    reasons = {q["line"]: q["reason"] for q in entries}
    assert "not valid JSON" in reasons[2]
    assert "invalid UTF-8" in reasons[3]
    assert "invalid UTF-8" in reasons[4] or "not valid JSON" in reasons[4]
    assert "active HTML/JS markup ('<script')" in reasons[5]
    assert "over ingest.max_text_chars=1000" in reasons[6]
    assert reasons[7] == "empty text"
    assert "int, not a string" in reasons[8]
    assert "missing text" in reasons[9]
    assert "not an ISO 8601 date" in reasons[10]
    assert "provenance 'robot'" in reasons[11]
    assert "duplicate id 'ok0'" in reasons[12]
    assert "not an object" in reasons[14]
    assert "control or replacement characters" in reasons[15]
    assert prof.records + len(entries) == 16 == prof.records + prof.quarantined_total  # every line accounted for
    assert all(q["file"] == str(path) and len(q["record"]) <= 500 for q in entries)
    assert next(q for q in entries if q["line"] == 6)["truncated"] is True


def test_markup_can_be_accepted_when_configured(isolated):
    path = write_jsonl(isolated / "b.jsonl", [{"id": "s", "text": "<script>alert(1)</script> is text here"}])
    prof, entries = _read(path, ing=IngestSettings(quarantine_markup=False))
    assert prof.records == 1 and not entries


def test_csv_and_parquet_with_a_column_mapping(isolated):
    frame = pd.DataFrame({"doc": ["a", "b", "c"], "body": ["one text here", None, "three texts"],
                          "ts": ["2025-01-02", "", "2020-01-01T10:00:00Z"]})
    cols = Columns(id="doc", text="body", created_at="ts")
    frame.to_csv(isolated / "b.csv", index=False)
    frame.to_parquet(isolated / "b.parquet")
    for name in ("b.csv", "b.parquet"):
        prof, entries = _read(isolated / name, cols)
        assert _ids(prof) == ["a", "c"]
        assert sorted(prof.accepted("day").tolist()) == [(date(y, m, d) - date(1970, 1, 1)).days
                                                         for y, m, d in [(2020, 1, 1), (2025, 1, 2)]]
        assert entries[0]["line"] == 2 and "missing text" in entries[0]["reason"]


def test_missing_ids_get_file_and_position(isolated):
    path = write_jsonl(isolated / "b.jsonl", [{"text": "no id here"}, {"text": "nor here"}])
    prof, _ = _read(path)
    assert _ids(prof) == sorted([f"{path}@0", f"{path}@{len(json.dumps({'text': 'no id here'})) + 1}"])


@pytest.mark.parametrize("name, fragment", [("nothere.jsonl", "no such batch file"), ("b.txt", "matches no batch file|unknown batch format"),
                                            ("*.parquet", "matches no batch file")])
def test_unreadable_inputs_name_the_file(isolated, name, fragment):
    (isolated / "b.txt").write_text("x")
    with pytest.raises(InputError, match=fragment) as exc:
        _read(isolated / name)
    assert name in str(exc.value)


def test_corrupt_parquet_names_the_file(isolated):
    (isolated / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="bad.parquet: cannot be read as parquet"):
        _read(isolated / "bad.parquet")


def _lines(n, start=0, bad_every=0):
    out = []
    for i in range(start, start + n):
        out.append('{"id": "cut' if bad_every and i % bad_every == 0 else json.dumps({"id": f"d{i}", "text": f"text number {i} " * 3}))
    return out


def test_byte_range_shards_give_the_same_profile_and_global_line_numbers(isolated):
    lines = _lines(3000, bad_every=97) + [json.dumps({"id": "d5", "text": "a late duplicate of d5"})]
    path = write_jsonl(isolated / "big.jsonl", lines)
    whole, whole_entries = _read(path)
    sharded, sharded_entries = _read(path, shard_bytes=4096)  # about 30 shards, cut mid-line
    assert sharded.records == whole.records and sharded.quarantined == whole.quarantined
    assert sharded.sample == whole.sample
    for col in ("id_hash", "text_hash", "words", "accepted"):
        assert np.array_equal(sharded.cols[col], whole.cols[col]), col
    assert [(e["line"], e["reason"][:17]) for e in sharded_entries] == [(e["line"], e["reason"][:17]) for e in whole_entries]
    assert whole_entries[0]["line"] == 1 and whole_entries[-1]["line"] == 3001
    assert "duplicate id 'd5'" in sharded_entries[-1]["reason"]


def test_process_pool_folder_glob_and_gzip_agree(isolated):
    write_jsonl(isolated / "in" / "a.jsonl", _lines(500))
    with gzip.open(isolated / "in" / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(_lines(500, start=500)) + "\n")
    serial, _ = _read(isolated / "in")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel, _ = _read(str(isolated / "in" / "*.jsonl*"), mapper=pool.map, shard_bytes=8192)
    assert parallel.records == serial.records == 1000
    assert parallel.sample == serial.sample


def test_fsspec_url(isolated):
    fs = fsspec.filesystem("memory")
    fs.pipe("/landing/x.jsonl", ("\n".join(_lines(10)) + "\n").encode())
    prof, _ = _read("memory://landing/*.jsonl")
    assert prof.records == 10
    with pytest.raises(InputError, match="memory://nowhere"):
        _read("memory://nowhere/x.jsonl")


def test_declared_provenance_is_counted_and_only_undeclared_texts_go_to_the_detector(isolated):
    rows = [{"id": f"d{i}", "text": f"text number {i}", "provenance": p}
            for i, p in enumerate(["human", "synthetic", "unknown", None, "human"] * 20)]
    for r in rows:
        if r["provenance"] is None:
            del r["provenance"]
    spec = str(write_jsonl(isolated / "p.jsonl", rows))
    prof, _ = profile_input(spec, ReadOptions(COLS, ING, 30, date(2024, 1, 1)))
    assert prof.declared() == (40, 20, 40)
    undeclared = prof.undeclared_sample_texts()
    sampled = {t for _, _, t in prof.sample}
    want = {r["text"] for r in rows if r.get("provenance") in (None, "unknown")} & sampled
    assert set(undeclared) == want and 0 < len(undeclared) < 30


# -- a wrong column name is an input error, not an empty batch (issue 20, item 2) --------------------------
def test_a_file_without_the_text_column_is_an_input_error_naming_file_columns_and_setting(isolated):
    body = write_jsonl(isolated / "b.jsonl", [{"id": str(i), "body": f"text {i}", "source": "web"} for i in range(100)])
    with pytest.raises(InputError) as err:
        _read(body)
    msg = str(err.value)
    assert str(body) in msg and "'text'" in msg and "body, id, source" in msg and "columns.text" in msg
    csv = isolated / "c.csv"
    pd.DataFrame({"id": ["1", "2"], "content": ["one", "two"]}).to_csv(csv, index=False)
    with pytest.raises(InputError, match=r"c.csv: no record has the text column 'text' \(columns found: content, id\)"):
        _read(csv)


def test_the_text_column_is_looked_for_per_file_and_across_shards(isolated):
    good = write_jsonl(isolated / "d" / "a.jsonl", [{"id": f"a{i}", "text": f"text {i}"} for i in range(50)])
    write_jsonl(isolated / "d" / "b.jsonl", [{"id": f"b{i}", "body": f"text {i}"} for i in range(50)])
    with pytest.raises(InputError, match=r"b.jsonl: no record has the text column"):
        _read(isolated / "d")
    # some records without it are quarantined as before; a file split in shards counts as one
    mixed = write_jsonl(isolated / "m.jsonl", [{"id": f"m{i}", "body": "x"} for i in range(300)] + [{"id": "t", "text": "here"}])
    prof, entries = _read(mixed, shard_bytes=1000)
    assert prof.records == 1 and prof.quarantined["missing_text"] == 300
    prof, _ = _read(good, cols=Columns(text="text"))
    assert prof.records == 50
