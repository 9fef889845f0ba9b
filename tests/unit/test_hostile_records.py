"""Issue 18, items 2 and 3: one record never kills a batch, and memory is bounded by the line, not the input.
Every hostile input is generated here (tmp_path); none is committed."""

import gzip
import json
import subprocess
import sys
import textwrap
from datetime import date

import pytest

from monitors.adapters import ingest
from monitors.config import Columns, IngestSettings
from monitors.adapters.ingest import ReadOptions, profile_input
from tests.conftest import REPO, write_jsonl

COLS = Columns()
GOOD = [{"id": f"ok{i}", "text": f"a perfectly good record number {i}"} for i in range(3)]


def _read(path, ing=IngestSettings(max_text_chars=1000), folder=None):
    return profile_input(str(path), ReadOptions(COLS, ing, 1000, date(2024, 1, 1), folder))


def _entries(prof):
    return {e["line"]: e for e in prof.entries}


# -- item 2: one record never kills a batch ----------------------------------------------------------------
def test_deeply_nested_json_is_quarantined_not_a_recursion_error(isolated):
    deep = '{"id": "deep", "text": "fine", "x": ' + "[" * 10_000 + "]" * 10_000 + "}"
    prof, _ = _read(write_jsonl(isolated / "b.jsonl", [GOOD[0], deep, GOOD[1]]))
    assert sorted(i for _, i, _ in prof.sample) == ["ok0", "ok1"]
    assert "nested too deeply" in _entries(prof)[2]["reason"] and prof.quarantined["unparseable"] == 1


def test_a_lone_surrogate_is_quarantined_and_never_reaches_the_indicators(isolated):
    rows = [GOOD[0], '{"id": "sur", "text": "half a pair \\ud800 here"}', '{"id": "\\udfff", "text": "fine text"}', GOOD[1]]
    prof, _ = _read(write_jsonl(isolated / "b.jsonl", rows))
    assert sorted(i for _, i, _ in prof.sample) == ["ok0", "ok1"]
    got = _entries(prof)
    assert "lone surrogate" in got[2]["reason"] and "'text'" in got[2]["reason"] and "'id'" in got[3]["reason"]
    "\n".join(prof.sample_texts).encode("utf-8")  # what compression_ratio does: raised UnicodeEncodeError


@pytest.mark.parametrize("prov", [["human"], {}, {"a": 1}])
def test_an_unhashable_provenance_is_quarantined(isolated, prov):
    prof, _ = _read(write_jsonl(isolated / "b.jsonl", [GOOD[0], {"id": "p", "text": "fine text", "provenance": prov}]))
    assert prof.records == 1 and prof.quarantined == {"bad_provenance": 1}
    assert "is not one of" in _entries(prof)[2]["reason"]


def test_any_exception_profiling_one_record_quarantines_that_record(isolated, monkeypatch):
    real = ingest.parse_date

    def flaky(value):
        if value == "boom":
            raise RuntimeError("a bug nobody foresaw")
        return real(value)

    monkeypatch.setattr(ingest, "parse_date", flaky)
    prof, _ = _read(write_jsonl(isolated / "b.jsonl", [GOOD[0], {"id": "x", "text": "t", "created_at": "boom"}, GOOD[1]]))
    assert prof.records == 2 and prof.quarantined_total == 1
    assert "RuntimeError: a bug nobody foresaw" in _entries(prof)[2]["reason"]


# -- item 3: memory bounded by the line ----------------------------------------------------------------------
def _peak_rss_growth_mb(code: str) -> float:
    """Run ``code`` (after ``setup()`` is called) in a fresh interpreter; its peak RSS growth in MB."""
    script = textwrap.dedent("""
        import resource, sys
        from datetime import date
        from monitors.config import Columns, IngestSettings
        from monitors.adapters.ingest import ReadOptions, profile_input, profile_rows
        opts = ReadOptions(Columns(), IngestSettings(), 100, date(2024, 1, 1))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    """) + textwrap.dedent(code) + textwrap.dedent("""
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_a_gzip_bomb_line_is_rejected_with_memory_bounded_by_the_line(isolated):
    bomb = isolated / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as fh:
        zeros = b"\0" * (1 << 20)
        for _ in range(300):  # 300 MB of zeros on one line
            fh.write(zeros)
        fh.write(b"\n" + json.dumps(GOOD[0]).encode() + b"\n")
    growth = _peak_rss_growth_mb(f"""
        prof, _ = profile_input({str(bomb)!r}, opts)
        assert prof.records == 1 and prof.quarantined == {{"oversize_text": 1}}, prof.quarantined
        assert prof.entries[0]["line"] == 1 and "bytes" in prof.entries[0]["reason"], prof.entries
    """)
    assert growth < 150, f"peak RSS grew by {growth:.0f} MB reading a 300 MB line"


def test_a_long_line_of_replacement_characters_is_rejected_before_any_scan(isolated):
    path = isolated / "fffd.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"id": "r", "text": "' + "\ufffd".encode() * 20_000_000 + b'"}\n')  # a 60 MB line
        fh.write(json.dumps(GOOD[0]).encode() + b"\n")
    growth = _peak_rss_growth_mb(f"""
        prof, _ = profile_input({str(path)!r}, opts)
        assert prof.records == 1 and prof.quarantined == {{"oversize_text": 1}}, prof.quarantined
    """)
    assert growth < 150, f"peak RSS grew by {growth:.0f} MB reading a 60 MB line"


def test_an_over_long_line_through_fsspec_is_rejected_and_the_next_line_read(isolated):
    import fsspec

    with fsspec.open("memory://hostile/b.jsonl", "wb") as fh:
        fh.write(b'{"id": "long", "text": "' + b"y" * 3_000_000 + b'"}\n' + json.dumps(GOOD[0]).encode() + b"\n")
    prof, _ = _read("memory://hostile/b.jsonl", IngestSettings(max_text_chars=100))
    assert prof.records == 1 and prof.quarantined == {"oversize_text": 1}
    entry = prof.entries[0]
    assert entry["line"] == 1 and "line too long" in entry["reason"] and entry["truncated"]


def test_the_length_check_runs_before_the_per_character_scan():
    # a 20 M-character text already in memory (40 MB): findall over it would build 20 M one-character strings
    growth = _peak_rss_growth_mb("""
        text = "\\ufffd" * 20_000_000
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        prof = profile_rows([(1, {"id": "r", "text": text}, None, b"{}", 0)], opts, file="mem")
        assert prof.quarantined == {"oversize_text": 1}, prof.quarantined
        before = base
    """)
    assert growth < 100, f"peak RSS grew by {growth:.0f} MB profiling one oversize text"


def test_quarantine_output_keeps_the_first_entries_per_reason_and_counts_the_rest(isolated):
    rows = [{"id": "same", "text": f"record {i} with the same id"} for i in range(200)] + ["not json"] * 3
    path = write_jsonl(isolated / "b.jsonl", rows)
    ing = IngestSettings(max_text_chars=1000, quarantine_entries_per_reason=5, shard_mb=1)
    prof, shards = _read(path, ing, folder=str(isolated))
    assert prof.quarantined == {"duplicate_id": 199, "unparseable": 3}
    out = ingest.write_quarantine(prof, shards, isolated / "quarantine.jsonl", COLS.id, ing.quarantine_entries_per_reason)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["kind"] for e in kept] == ["duplicate_id"] * 5 + ["unparseable"] * 3
    assert [e["line"] for e in kept[:5]] == [2, 3, 4, 5, 6]


def test_the_quarantined_share_alerts_through_a_rule(isolated):
    from monitors.adapters import gx_rules
    from monitors.config import DEFAULT_RULES
    from monitors.adapters.gx_rules import load_rules

    suite = load_rules(DEFAULT_RULES)
    row = {"batch.records": 1.0, "batch.quarantined": 199.0, "batch.quarantined_share": 199 / 200}
    breached = gx_rules.evaluate(suite, row, "news")
    assert "batch.quarantined_share" in {r.column for r in suite.rules}
    assert any(a.rule == next(r.name for r in suite.rules if r.column == "batch.quarantined_share") for a in breached)


# -- item 7: no false duplicates ------------------------------------------------------------------------------
def test_records_without_ids_are_never_false_duplicates_across_shards_or_same_named_files(isolated):
    rows = [{"text": f"a record without an id, number {i}"} for i in range(400)]
    for folder in ("x", "y"):
        write_jsonl(isolated / folder / "b.jsonl", rows)
    whole, _ = _read(isolated / "x" / "b.jsonl")
    sharded, _ = profile_input(str(isolated / "x" / "b.jsonl"), ReadOptions(COLS, IngestSettings(), 1000, date(2024, 1, 1)),
                               shard_bytes=1024)  # about 16 shards, each starting again at line 1
    assert (sharded.records, sharded.quarantined_total) == (400, 0)
    assert sharded.sample == whole.sample  # the made-up ids do not depend on where shards are cut
    both, _ = _read(str(isolated / "*" / "b.jsonl"))
    assert (both.records, both.quarantined_total) == (800, 0)


# -- item 12 (small ones): a BOM and CR-only line endings ---------------------------------------------------
def test_a_utf8_bom_does_not_quarantine_the_first_record(isolated):
    path = isolated / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in GOOD))
    prof, _ = _read(path)
    assert (prof.records, prof.quarantined_total) == (3, 0)


@pytest.mark.parametrize("name, shard_bytes", [("cr.jsonl", 64 << 20), ("cr.jsonl", 300), ("cr.jsonl.gz", 64 << 20)])
def test_cr_only_line_endings_count_every_record(isolated, name, shard_bytes):
    rows = [{"id": f"r{i}", "text": f"an old Mac file, record {i}"} for i in range(30)] + ["not json"]
    data = b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\r" for r in rows)
    path = isolated / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    prof, _ = profile_input(str(path), ReadOptions(COLS, IngestSettings(), 1000, date(2024, 1, 1)), shard_bytes=shard_bytes)
    assert (prof.records, prof.quarantined_total) == (30, 1)
    assert [e["line"] for e in prof.entries] == [31]
