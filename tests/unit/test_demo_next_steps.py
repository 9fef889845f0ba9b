"""The demo's closing commands run as printed (issue 20, item 9): the README installs into .venv without
activating it, so `collapse-monitor ...` is not on PATH; the report goes under the state directory."""

import shlex
import sys

import pytest

import flows.demo
from flows.cli import main


@pytest.mark.parametrize("argv0, on_path, expected", [
    (".venv/bin/collapse-monitor", False, ".venv/bin/collapse-monitor"),
    ("/opt/x/bin/collapse-monitor", False, "/opt/x/bin/collapse-monitor"),
    ("/opt/x/bin/collapse-monitor", True, "collapse-monitor"),
])
def test_demo_prints_commands_that_run_as_started(argv0, on_path, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(flows.demo, "run_demo", lambda *a, **k: ([], {}, []))
    monkeypatch.setattr(sys, "argv", [argv0, "demo"])
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: argv0 if on_path else None)
    state = tmp_path / "my state"
    assert main(["demo", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    closing = {line.split(":", 1)[0]: shlex.split(line.split(":", 1)[1].split("  (")[0])
               for line in out.splitlines() if line.startswith(("Trend report", "Open the MLflow UI"))}
    report, ui = closing["Trend report (HTML with charts)"], closing["Open the MLflow UI on the results"]
    assert report[0] == expected and ui[0] == expected
    assert report[1] == "report" and ui[1] == "ui"
    out_dir = report[report.index("--out") + 1]
    assert out_dir.startswith(str(state.resolve())), out_dir  # not into the folder it was started from
    assert report[report.index("--state-dir") + 1] == str(state.resolve())
