"""Hostile options and settings (issue 18, items 8 and 9): dataset names that escape the state dir or clash
with the models/ scope, and credentials in URIs that must never be printed, logged or stored as a parameter."""

import json

import pytest

from flows.cli import main
from monitors.config import ConfigError, load_settings
from tests.conftest import write_jsonl

BAD_NAMES = ["../../../../tmp/x", "a/b", " lead", "trail ", "", "x" * 500, "models/victim", "models", "detectors",
             "..", "a\\b", "line\nbreak"]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("argv", [["check", "--input", "b.jsonl"], ["reference", "build", "--input", "b.jsonl"],
                                  ["report", "--out", "r"], ["history"], ["alerts", "list"]])
def test_a_bad_dataset_option_exits_2_naming_the_option_before_anything_is_written(isolated, capsys, name, argv):
    write_jsonl(isolated / "b.jsonl", [{"id": "1", "text": "some text"}])
    assert main([*argv, "--dataset", name]) == 2
    err = capsys.readouterr().err
    assert "--dataset" in err
    assert not (isolated / ".collapse-monitor").exists()


@pytest.mark.parametrize("text", ["dataset: models\n", "dataset: '..'\n", f"dataset: {'x' * 500}\n",
                                  "schedules:\n  dataset: a/b\n", "schedules:\n  dataset: ' lead'\n"])
def test_a_bad_dataset_setting_is_a_config_error(isolated, text):
    f = isolated / "cm.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="dataset"):
        load_settings(f)


def test_ordinary_dataset_names_still_work(isolated):
    f = isolated / "cm.yaml"
    f.write_text("dataset: news feed-2.v1\nschedules:\n  dataset: web_crawl\n")
    assert load_settings(f).dataset == "news feed-2.v1"


@pytest.mark.parametrize("text", ['alerts: "slack://user:PASS@hooks.example/x"\n',
                                  'alerts:\n  urls: "slack://user:PASS@hooks.example/x"\n',
                                  'tracking_uri: ["http://user:PASS@127.0.0.1:5000"]\n'])
def test_config_errors_never_echo_a_credential(isolated, text):
    f = isolated / "cm.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    assert "PASS" not in str(exc.value)


@pytest.mark.parametrize("value", ["slack://user:PASS@hooks.example/x", '["slack://user:PASS@h/x"', "{}"])
def test_a_non_json_alert_urls_variable_is_a_config_error_naming_it(isolated, monkeypatch, value):
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERTS__URLS", value)
    with pytest.raises(ConfigError, match="COLLAPSE_MONITOR_ALERTS__URLS") as exc:
        load_settings(None)
    assert "PASS" not in str(exc.value)


@pytest.mark.parametrize("where", ["env", "file"])
def test_tracking_uri_credentials_are_never_printed_nor_a_prefect_parameter(isolated, monkeypatch, where):
    from monitors.adapters import runtime

    uri = "http://user:PASS@127.0.0.1:5999"
    if where == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        settings = load_settings(None)
    else:
        (isolated / "cm.yaml").write_text(f"tracking_uri: '{uri}'\n")
        settings = load_settings(isolated / "cm.yaml")
    rt = runtime.prepare(settings)
    assert "PASS" not in rt.tracking_uri and "127.0.0.1:5999" in rt.tracking_uri  # what the CLI prints
    assert "PASS" not in repr(rt) and "PASS" not in repr(settings)
    from flows.check import check_incoming_data

    stored = check_incoming_data.serialize_parameters({"settings": settings, "rt": rt})
    assert "PASS" not in json.dumps(stored, default=str)
    client = runtime.mlflow_client(rt)  # MLflow itself still gets the credentials
    assert client._tracking_client.tracking_uri == uri


# -- issue 18, item 12: small ones ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["history"], ["alerts", "list"]])
def test_a_state_dir_that_is_a_file_exits_2_naming_it(isolated, capsys, argv):
    (isolated / "afile").write_text("x")
    assert main(["--state-dir", str(isolated / "afile"), *argv]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "state" in err and "Traceback" not in err


def test_a_glob_through_a_symlink_loop_reads_each_file_once(isolated):
    import os

    from monitors.adapters import sources

    d = isolated / "landing"
    write_jsonl(d / "sub" / "a.jsonl", [{"id": "1", "text": "t"}])
    os.symlink(d, d / "sub" / "loop")  # sub/loop -> landing: landing/sub/loop/sub/loop/...
    files = sources.expand(str(d / "**" / "*.jsonl"))
    assert files == [str(d / "sub" / "a.jsonl")]


def test_a_newline_in_a_file_name_is_never_printed_raw(isolated, capsys):
    from monitors.core.quantify import ShareEstimate
    from monitors.core.results import CheckResult

    name = "evil\n  records: 0 checked, 0 quarantined.jsonl"
    assert main(["check", "--input", name]) == 2
    err = capsys.readouterr().err
    assert "\\n" in err and "\n  records" not in err
    (isolated / name).write_text('{"id": "1", "text": "t"}\n')
    r = CheckResult(run_id="r", dataset="news", batch_file=str(isolated / name), records=1, quarantined=0,
                    indicators={}, share=ShareEstimate(None, None, None, "none"), alerts=[], reference_run_id="ref",
                    detector=None, notes=[])
    lines = r.summary().splitlines()
    assert "evil\\n" in lines[0] and not any(line.startswith("  records: 0 checked, 0 quarantined.jsonl") for line in lines)
