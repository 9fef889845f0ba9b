"""Issue 18, item 1: a failure after a run is logged is delivery's problem, never the batch's. Broken channel URLs
are rejected when settings load (naming the setting, never echoing the secret); a send that raises anything is
kept in the outbox and retried; a 0-byte or corrupt check_failed file never poisons later checks."""

import json

import pytest

from flows import oncall, tasks
from flows.cli import main
from monitors.core import alerting
from monitors.config import load_settings
from monitors.adapters.delivery import Outbox, flush
from monitors.core.errors import ConfigError

SECRET = "R0UT1NGKEYs3cr3t"
TYPO = f"pdevents+http://{SECRET}@127.0.0.1:18o81/x"  # the repro: an 'o' for a '0' in the port


def _n(run="run-1"):
    return {"kind": "firing", "rule": "r", "severity": "critical", "status": "firing", "fingerprint": "fp1",
            "value": 1.0, "threshold": 0.5, "summary": "s", "dataset": "news", "run_id": run}


def test_a_send_that_raises_anything_stays_in_the_outbox_and_flush_goes_on(isolated):
    box = Outbox(isolated / "outbox")
    box.put(_n("run-1"), 0, "pdevents+http://***")
    box.put(_n("run-2"), 0, "pdevents+http://***")
    calls = []

    def send(url, n):
        calls.append(n["run_id"])
        raise ValueError(f"nonnumeric port in {url}")

    box.put(_n("run-3"), 1, "json://***")
    out = flush(box, [TYPO, "json://h/x"], retries=2, send=send, sleep=lambda s: None)
    # the broken channel's first delivery is tried (then the channel rests for this run), the other channel's too
    assert (out.sent, out.queued) == (0, 3) and calls == ["run-1", "run-1", "run-3", "run-3"]
    assert "ValueError" in out.errors[0] and SECRET not in " ".join(out.errors)
    assert SECRET not in "".join(p.read_text() for p in (isolated / "outbox").iterdir())


@pytest.mark.parametrize("url", [TYPO, f"pdevents+ftp://{SECRET}@host/x", f"json://{SECRET}@127.0.0.1:80o8/hook",
                                 f"nosuchscheme://{SECRET}@host"])
def test_a_broken_channel_url_in_the_config_file_is_rejected_at_load_without_its_secret(isolated, url):
    f = isolated / "cm.yaml"
    f.write_text(json.dumps({"alerts": {"urls": ["json://127.0.0.1:8080/ok", url]}}))
    with pytest.raises(ConfigError) as exc:
        load_settings(f)
    msg = str(exc.value)
    assert "alerts.urls" in msg and "channel #2" in msg and str(f) in msg and SECRET not in msg


def test_a_broken_channel_url_in_the_environment_is_rejected_at_load_without_its_secret(isolated, monkeypatch):
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", f"pdevents://K {TYPO}")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert "COLLAPSE_MONITOR_ALERT_URLS" in str(exc.value) and SECRET not in str(exc.value)


def test_good_channel_urls_load(isolated, monkeypatch):
    f = isolated / "cm.yaml"
    f.write_text(json.dumps({"alerts": {"urls": ["pdevents://KEY", "pdevents+http://KEY@127.0.0.1:18081/x",
                                                 "json://127.0.0.1:8080/hook", "mailto://u:p@example.com"]}}))
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", "pdevents+https://KEY@events.example.com/v2/enqueue")
    assert len(load_settings(f).alerts.urls) == 4


def test_check_with_a_broken_channel_url_exits_2_naming_the_setting(isolated, monkeypatch, capsys):
    monkeypatch.setenv("COLLAPSE_MONITOR_ALERT_URLS", TYPO)
    assert main(["check", "--input", str(isolated / "none.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "COLLAPSE_MONITOR_ALERT_URLS" in captured.err and SECRET not in captured.out + captured.err


def _failure_file(settings, scope="news"):
    return settings.state_path / "alerts" / f"check_failed-{alerting.fingerprint('check_failed', scope)}.json"


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"since": 1}'])
def test_a_corrupt_check_failed_file_is_resolved_not_a_crash(isolated, content):
    settings = load_settings()
    path = _failure_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text(content)  # `: > STATE/alerts/check_failed-<fp>.json` and friends
    notes = oncall.clear_failure(settings, "news", "run-9")
    assert [(n["kind"], n["rule"]) for n in notes] == [("resolved", "check_failed")] and not path.exists()


def test_report_failure_replaces_a_corrupt_file_atomically(isolated, monkeypatch):
    settings = load_settings()
    path = _failure_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text("")
    writes = []
    monkeypatch.setattr(tasks.os, "replace", lambda a, b: writes.append((a, b)) or __import__("os").rename(a, b))
    oncall.report_failure(settings, "news", "b.jsonl", RuntimeError("boom"))
    saved = json.loads(path.read_text())
    assert saved["rule"] == "check_failed" and saved["since"] > 0 and "boom" in saved["summary"]
    assert [str(b) for _, b in writes] == [str(path)]
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
