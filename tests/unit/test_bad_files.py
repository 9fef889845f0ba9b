"""Issue 18, item 11: one bad file never sinks its neighbours. Generated in tmp_path, nothing committed."""

import gzip
import json
from datetime import date

import pytest

from monitors.config import Columns, IngestSettings
from monitors.errors import InputError
from monitors.ingest import ReadOptions, profile_input
from tests.conftest import write_jsonl


def _read(spec, folder=None):
    return profile_input(str(spec), ReadOptions(Columns(), IngestSettings(), 1000, date(2024, 1, 1), folder))


def _folder(root):
    d = root / "batch"
    write_jsonl(d / "good.jsonl", [{"id": f"g{i}", "text": f"a good record number {i}"} for i in range(100)])
    (d / "bad.csv").write_text('id,text\n1,"an unclosed quote\n2,more\n')
    whole = gzip.compress(b"".join(json.dumps({"id": f"z{i}", "text": f"zipped record {i}"}).encode() + b"\n"
                                   for i in range(200)))
    (d / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # a truncated upload
    (d / "junk.parquet").write_bytes(b"PAR1 not really parquet")
    return d


@pytest.mark.parametrize("to_files", [False, True])
def test_a_malformed_file_in_a_folder_is_quarantined_whole_and_the_rest_is_checked(isolated, to_files):
    d = _folder(isolated)
    qdir = isolated / "q"
    qdir.mkdir()
    prof, _ = _read(d, str(qdir) if to_files else None)
    assert prof.records == 100 and prof.quarantined == {"unreadable_file": 3}
    entries = prof.entries if not to_files else [json.loads(line) for f in prof.quarantine_files
                                                 for line in open(f, encoding="utf-8")]
    got = {e["file"]: e for e in entries}
    assert set(got) == {str(d / "bad.csv"), str(d / "cut.jsonl.gz"), str(d / "junk.parquet")}
    assert all(e["kind"] == "unreadable_file" and "cannot be read as" in e["reason"] for e in got.values())
    assert "z1" not in {i for _, i, _ in prof.sample}  # a truncated file is not half counted


@pytest.mark.parametrize("name", ["bad.csv", "cut.jsonl.gz", "junk.parquet"])
def test_a_single_unreadable_file_is_still_an_input_error(isolated, name):
    d = _folder(isolated)
    with pytest.raises(InputError, match=f"{name}: cannot be read as"):
        _read(d / name)
