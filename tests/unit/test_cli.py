"""CLI plumbing, in-process: help texts, exit codes, error messages. No Prefect flow runs here."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tests.conftest import REPO, write_jsonl

COMMANDS = ["check", "reference", "history", "demo", "gc", "ui"]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert re.search(rf"^\s+{cmd}\s", out, re.M), cmd
    assert "demo --quick" in out and "Exit codes" in out


@pytest.mark.parametrize("argv", [["check"], ["reference", "build"], ["detector", "train"], ["alerts", "list"], ["alerts", "silence"], ["history"], ["demo"], ["gc"], ["ui"]])
def test_every_command_help_has_an_example(argv, capsys):
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and "collapse-monitor " + argv[0] in out


def test_usage_errors_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["check"]) == 2  # --input is required
    assert "--input" in capsys.readouterr().err


def test_missing_batch_file_exits_2_and_names_it(isolated, capsys):
    assert main(["check", "--input", "nothere.jsonl"]) == 2
    assert "nothere.jsonl: no such batch file" in capsys.readouterr().err


def test_detector_train_on_a_missing_file_exits_2_and_names_it(isolated, capsys):
    human = write_jsonl(isolated / "h.jsonl", [{"id": "1", "text": "some text"}])
    assert main(["detector", "train", "--human", str(human), "--synthetic", "gone.jsonl"]) == 2
    assert "gone.jsonl: no such batch file" in capsys.readouterr().err


def test_detector_train_on_too_little_text_exits_2_and_says_how_much_it_needs(isolated, capsys):
    human = write_jsonl(isolated / "h.jsonl", [{"id": str(i), "text": f"human text {i}"} for i in range(10)])
    synthetic = write_jsonl(isolated / "s.jsonl", [{"id": str(i), "text": f"machine text {i}"} for i in range(60)])
    assert main(["detector", "train", "--human", str(human), "--synthetic", str(synthetic)]) == 2
    assert "need at least 50 human and 50 synthetic texts, got 10 and 60" in capsys.readouterr().err


def test_detector_train_without_machine_text_exits_2_and_offers_generate(isolated, capsys):
    human = write_jsonl(isolated / "h.jsonl", [{"id": "1", "text": "some text"}])
    assert main(["detector", "train", "--human", str(human)]) == 2
    assert "--synthetic PATH, or --generate N" in capsys.readouterr().err


def test_check_without_reference_exits_2_and_names_the_command(isolated, capsys):
    batch = write_jsonl(isolated / "b.jsonl", [{"id": "1", "text": "some text"}])
    assert main(["check", "--input", str(batch), "--dataset", "news"]) == 2
    err = capsys.readouterr().err
    assert "no reference yet" in err and "collapse-monitor reference build --input PATH --dataset news" in err


def test_bad_config_exits_2_and_names_key_and_file(isolated, capsys):
    (isolated / "collapse-monitor.yaml").write_text("indicators:\n  window: zero\n")
    assert main(["history"]) == 2
    err = capsys.readouterr().err
    assert "collapse-monitor.yaml" in err and "indicators.window" in err


def test_history_on_an_empty_store(isolated, capsys):
    assert main(["history", "--dataset", "news"]) == 0
    assert "no checks yet for dataset 'news'" in capsys.readouterr().out
    assert main(["history", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_failure_filter_is_installed_once_however_often_main_runs():
    import logging
    from argparse import Namespace

    from flows.cli import _console_reports_failures_once, _RunFailureFilter

    for _ in range(3):
        _console_reports_failures_once(Namespace(verbose=False))
    handlers = logging.getLogger().handlers
    assert handlers and all(sum(isinstance(f, _RunFailureFilter) for f in h.filters) == 1 for h in handlers)
    record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1, "failed", None, None)
    assert not _RunFailureFilter().filter(record)
    assert _RunFailureFilter().filter(logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, "ok", None, None))


def _readme_commands():
    lines = (REPO / "README.md").read_text().splitlines()[:12]
    return [ln.strip() for ln in lines if ln.strip().startswith("python3.11 -m venv")]


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    demo, test = _readme_commands()
    assert demo.endswith("collapse-monitor demo")
    assert test.endswith("python -m pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert test in ci.splitlines()


def test_console_script_points_at_the_entry_that_runs_main():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"collapse-monitor": "flows.cli:entry"}


def _env(tmp_path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "COLLAPSE_MONITOR_STATE_DIR": str(tmp_path / "st")}


def test_the_program_ends_with_mains_code_its_exit_handlers_run_and_its_output_is_flushed(tmp_path):
    """entry() skips the interpreter's teardown (os._exit): nothing printed may be lost, the exit code is
    main's, and exit handlers still run."""
    def program(*argv):
        return subprocess.run([sys.executable, "-m", "flows.cli", *argv], env=_env(tmp_path), cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    ok = program("history", "--json")
    assert (ok.returncode, ok.stdout.strip()) == (0, "[]")
    missing = program("check", "--input", "nothing.jsonl", "--json")
    assert missing.returncode == 2 and json.loads(missing.stdout)["exit_code"] == 2 and "nothing.jsonl" in missing.stderr
    code = ("import atexit, sys; from pathlib import Path; from flows.cli import entry; "
            "atexit.register(Path('handler-ran').touch); sys.argv[1:] = ['history', '--json']; entry()")
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=_env(tmp_path))
    assert ran.returncode == 0 and ran.stdout.strip() == "[]" and (tmp_path / "handler-ran").exists()


@pytest.mark.parametrize("argv, codes", [(["--help"], (0, 141)), (["history", "--json"], (141,))])
def test_a_reader_that_goes_away_ends_the_program_quietly(tmp_path, argv, codes):
    """`collapse-monitor history | head -1`: no BrokenPipeError traceback, exit 141 as for SIGPIPE (argparse
    itself ignores a failed write of --help)."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *argv], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the program writes
    err = proc.stderr.read().decode()
    assert proc.wait(120) in codes and "Traceback" not in err and "BrokenPipe" not in err, err


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_importing_the_cli_has_no_side_effects(isolated):
    import subprocess

    code = "import flows.cli, monitors.config, monitors.adapters.runtime, monitors.adapters.tracking; import os; print(sorted(os.listdir('.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_probes_build_by_tokens_with_edge_cases(isolated, capsys):
    ref = write_jsonl(isolated / "ref.jsonl", [{"text": "the cat sat on the mat"}] * 20)
    texts = ["the cat sat", "the mat", "on the cat", "the cat sat on the mat", "an okapi", "a quokka grinned"]
    inp = write_jsonl(isolated / "in.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)])
    edge = write_jsonl(isolated / "edge.jsonl", [{"text": "zyzzyva", "prompt": "Write about zyzzyva"}])
    out = isolated / "probes.jsonl"
    assert main(["probes", "build", "--input", str(inp), "--by", "tokens", "--reference", str(ref),
                 "--edge-cases", str(edge), "--out", str(out), "--tail", "0.34"]) == 0
    assert "wrote 7 probes" in capsys.readouterr().out
    rows = {r["text"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["an okapi"]["slice"] == rows["a quokka grinned"]["slice"] == "tail"
    assert rows["zyzzyva"] == {"id": "edge-0001", "origin": "edge_case", "prompt": "Write about zyzzyva",
                               "slice": "tail", "text": "zyzzyva"}


@pytest.mark.parametrize("args, message", [
    (["--by", "tokens"], "--by tokens needs --reference PATH"),
    (["--head", "0.9", "--tail", "0.2"], "need 0 < head <= 1 - tail < 1"),
    (["--frequencies", "nope.jsonl"], "nope.jsonl: no such file"),
])
def test_probes_build_errors(isolated, capsys, args, message):
    inp = write_jsonl(isolated / "in.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    assert main(["probes", "build", "--input", str(inp), "--out", str(isolated / "o.jsonl"), *args]) == 2
    assert message in capsys.readouterr().err


# -- common options: before the command, after it, or between a command and its action (issue 20, item 1) --
COMMON_OPTIONS = [(["--config", "other.yaml"], "config", "other.yaml"), (["--state-dir", "elsewhere"], "state_dir", "elsewhere"),
                  (["-v"], "verbose", True), (["--verbose"], "verbose", True)]
EVERY_COMMAND = [["check", "--input", "b.jsonl"], ["reference", "build", "--input", "h.jsonl"],
                 ["detector", "train", "--human", "h.jsonl", "--synthetic", "s.jsonl"],
                 ["probes", "build", "--input", "i.jsonl", "--out", "p.jsonl"],
                 ["probe", "--model", "models:/m@production", "--probes", "p.jsonl"], ["report", "--out", "r"], ["serve"],
                 ["alerts", "list"], ["alerts", "silence", "abc", "--for", "1h", "--reason", "r"], ["history"], ["demo"], ["ui"]]


@pytest.mark.parametrize("option,dest,value", COMMON_OPTIONS)
@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=lambda a: " ".join(a[:2]))
def test_common_options_count_in_every_position(option, dest, value, argv):
    from flows.cli import _parser

    positions = [[*option, *argv], [*argv, *option]]
    if argv[0] in ("reference", "detector", "probes", "alerts"):  # between the command and its action
        positions.append([argv[0], *option, *argv[1:]])
    for args in positions:
        assert getattr(_parser().parse_args(args), dest) == value, args
    defaults = _parser().parse_args(argv)
    assert (defaults.config, defaults.state_dir, defaults.verbose) == (None, None, False)


@pytest.mark.parametrize("before", [True, False])
def test_a_config_file_given_before_the_command_is_read(isolated, capsys, before):
    (isolated / "typo.yaml").write_text("indicators:\n  window: zero\n")
    argv = ["--config", "typo.yaml", "history"] if before else ["history", "--config", "typo.yaml"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "typo.yaml" in err and "indicators.window" in err


# -- failures where people look (issue 20, item 5) --------------------------------------------------------
def test_check_json_prints_one_error_object_when_it_fails(isolated, capsys):
    assert main(["check", "--input", "nothere.jsonl", "--json"]) == 2
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    err = json.loads(lines[0])
    assert err["exit_code"] == 2 and "nothere.jsonl: no such batch file" in err["error"]


def test_a_bug_under_json_still_prints_the_error_object_and_the_traceback(isolated, capsys, monkeypatch):
    from flows import cli

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "history", broken)
    with pytest.raises(RuntimeError):
        main(["history", "--json"])
    assert json.loads(capsys.readouterr().out) == {"error": "RuntimeError: boom", "exit_code": 1}


def test_ctrl_c_that_prefect_turns_into_another_error_is_still_an_interruption(isolated, capsys, monkeypatch):
    """Found by the warm-service test: a Ctrl-C while Prefect creates a task run ends in its clean-up's
    ``ValueError: Task run is not set``; the user pressed Ctrl-C, so exit 130 and {"error": "interrupted"}."""
    from flows import cli

    def interrupted_in_prefect(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("Task run is not set")

    monkeypatch.setitem(cli.COMMANDS, "history", interrupted_in_prefect)
    assert main(["history", "--json"]) == 130
    assert json.loads(capsys.readouterr().out) == {"error": "interrupted", "exit_code": 130}


def test_alerts_list_shows_a_failed_check_with_a_header_critical_first(isolated, capsys):
    from flows.oncall import report_failure
    from monitors.config import load_settings
    from monitors.core.errors import InputError

    settings = load_settings(None)
    report_failure(settings, "news", "b.jsonl.gz", InputError("b.jsonl.gz: truncated gzip"))
    report_failure(settings, "models/intent", "probes.jsonl", RuntimeError("model raised"), "probe_failed", "probe")
    assert main(["alerts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SEVERITY", "STATUS", "RULE", "DATASET"]
    assert lines[1].split()[:4] == ["critical", "firing", "probe_failed", "models/intent"]
    assert lines[2].split()[:4] == ["warning", "firing", "check_failed", "news"]
    assert "truncated gzip" in lines[2]
    assert main(["alerts", "list", "--dataset", "news", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["rule"] for a in listed["news"]["alerts"]] == ["check_failed"]
