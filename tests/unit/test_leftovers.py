"""Issue 18, item 10 (part): temp dirs do not pile up. A process's GX Data Docs folder goes with it, and the
temp dirs of a process that was killed are removed by the next start."""

import subprocess
import sys
import tempfile

from monitors.adapters import runtime
from monitors.config import load_settings
from tests.conftest import REPO


def test_gx_data_docs_folder_is_removed_when_the_process_ends(isolated):
    code = ("from datetime import date; from monitors.adapters import gx_records, ingest; from monitors.config import *;"
            "import json, pathlib;"
            "p = ingest.profile_rows(ingest.records_from_dicts([{'id': '1', 'text': 'hello world'}]), "
            "ingest.ReadOptions(Columns(), IngestSettings(), 10, date(2024, 1, 1)), file='x');"
            "gx_records.validate(p, json.loads(pathlib.Path('expectations/incoming_batch.json').read_text()))")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=240,
                   env={"TMPDIR": str(isolated), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false"})
    assert not list(isolated.glob("cm-gx-docs-*"))


def test_temp_dirs_of_a_dead_process_are_removed_at_the_next_start(isolated, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(isolated / "tmp"))
    (isolated / "tmp").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    import os

    for name in [f"cm-gx-docs-{dead_pid}-abc", f"cm-run-{dead_pid}-def", f"cm-run-{os.getpid()}-live", "cm-other"]:
        (isolated / "tmp" / name).mkdir()
        (isolated / "tmp" / name / "f").write_text("x")
    runtime.prepare(load_settings(None))
    assert sorted(p.name for p in (isolated / "tmp").iterdir()) == ["cm-other", f"cm-run-{os.getpid()}-live"]
