import json

import pandas as pd
import pytest

from monitors.config import Columns, IngestSettings
from monitors.errors import InputError
from monitors.ingest import read_batch
from tests.conftest import write_jsonl

COLS, ING = Columns(), IngestSettings(max_text_chars=1000)


def _read(path):
    return read_batch(path, COLS, ING)


def test_hostile_jsonl_quarantines_each_bad_record_with_a_reason_and_keeps_the_rest(isolated):
    good = [{"id": f"ok{i}", "text": f"a perfectly good record number {i}", "created_at": "2023-05-01"} for i in range(3)]
    path = write_jsonl(isolated / "b.jsonl", [json.dumps(good[0]), '{"id": "cut", "text": "this line was trunc'])
    with path.open("ab") as fh:
        fh.write(b'{"id": "utf", "text": "bad \xff\xfe bytes"}\n')
        fh.write(b"\x00\x01\x02binary junk\x9c\n")
        for row in [
            {"id": "script", "text": "<script>alert(1)</script> is just text and is checked"},
            {"id": "big", "text": "x" * 5000},
            {"id": "empty", "text": "   "},
            {"id": "num", "text": 42},
            {"id": "notext"},
            {"id": "date", "text": "fine text", "created_at": "next tuesday"},
            {"id": "prov", "text": "fine text", "provenance": "robot"},
            good[0],
            good[1],
            [1, 2],
        ]:
            fh.write((json.dumps(row) + "\n").encode())
        fh.write((json.dumps(good[2]) + "\n").encode())
    batch = _read(path)
    assert [r.id for r in batch.records] == ["ok0", "script", "ok1", "ok2"]
    reasons = {q["line"]: q["reason"] for q in batch.quarantine}
    assert "not valid JSON" in reasons[2]
    assert "invalid UTF-8" in reasons[3]
    assert "invalid UTF-8" in reasons[4] or "not valid JSON" in reasons[4]
    assert "over ingest.max_text_chars=1000" in reasons[6]
    assert reasons[7] == "empty text"
    assert "int, not a string" in reasons[8]
    assert "missing text" in reasons[9]
    assert "not an ISO 8601 date" in reasons[10]
    assert "provenance 'robot'" in reasons[11]
    assert "duplicate id 'ok0'" in reasons[12]
    assert "not an object" in reasons[14]
    assert len(batch.records) + len(batch.quarantine) == 15  # every non-blank line is accounted for
    assert all(q["file"] == str(path) and len(q["record"]) <= 500 for q in batch.quarantine)
    assert next(q for q in batch.quarantine if q["line"] == 6)["truncated"] is True


def test_csv_and_parquet_with_a_column_mapping(isolated):
    frame = pd.DataFrame({"doc": ["a", "b", "c"], "body": ["one text here", None, "three texts"],
                          "ts": ["2025-01-02", "", "2020-01-01T10:00:00Z"]})
    cols = Columns(id="doc", text="body", created_at="ts")
    frame.to_csv(isolated / "b.csv", index=False)
    frame.to_parquet(isolated / "b.parquet")
    for name in ("b.csv", "b.parquet"):
        batch = read_batch(isolated / name, cols, ING)
        assert [r.id for r in batch.records] == ["a", "c"]
        assert [str(r.created_at) for r in batch.records] == ["2025-01-02", "2020-01-01"]
        assert batch.quarantine[0]["line"] == 2 and "missing text" in batch.quarantine[0]["reason"]


def test_missing_ids_get_file_and_line(isolated):
    batch = _read(write_jsonl(isolated / "b.jsonl", [{"text": "no id here"}]))
    assert batch.records[0].id == "b.jsonl:1"


@pytest.mark.parametrize("name, fragment", [("nothere.jsonl", "no such batch file"), ("b.txt", "unknown batch format")])
def test_unreadable_inputs_name_the_file(isolated, name, fragment):
    (isolated / "b.txt").write_text("x")
    with pytest.raises(InputError, match=fragment) as exc:
        _read(isolated / name)
    assert name in str(exc.value)


def test_corrupt_parquet_names_the_file(isolated):
    (isolated / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="bad.parquet: cannot be read as parquet"):
        _read(isolated / "bad.parquet")
