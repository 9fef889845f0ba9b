"""Delivery to a real HTTP receiver on 127.0.0.1: PagerDuty Events v2 trigger/resolve with the fingerprint as
dedup key, Apprise's generic JSON webhook, retries, the outbox across runs, and no secret where it could leak."""

import json
import socket

from monitors.adapters.delivery import Outbox, deliver, flush, parse_urls, redact

SECRET = "R0UT1NGKEYs3cr3t"


def _n(kind, rule="tail_coverage_collapse", fp="fp0123456789abcd", run="run-1"):
    return {"kind": kind, "rule": rule, "severity": "critical", "status": "resolved" if kind == "resolved" else "firing",
            "fingerprint": fp, "value": 0.41, "threshold": 0.6, "summary": "tails gone", "dataset": "news",
            "run_id": run}


def _pd(receiver):
    return f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/v2/enqueue"


def test_pagerduty_events_trigger_then_resolve_with_the_fingerprint_as_dedup_key(isolated, receiver):
    box = Outbox(isolated / "outbox")
    assert deliver(box, [_pd(receiver)], [_n("firing")], backoff=0).sent == 1
    assert deliver(box, [_pd(receiver)], [_n("resolved", run="run-2")], backoff=0).sent == 1
    events = [r["json"] for r in receiver.received]
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert {e["dedup_key"] for e in events} == {"fp0123456789abcd"} and events[0]["routing_key"] == SECRET
    assert events[0]["payload"]["severity"] == "critical" and "tail_coverage_collapse" in events[0]["payload"]["summary"]
    assert receiver.received[0]["path"] == "/v2/enqueue" and box.pending() == []


def test_apprise_json_webhook(isolated, receiver):
    out = deliver(Outbox(isolated / "o"), [f"json://127.0.0.1:{receiver.port}/hook"], [_n("firing")], backoff=0)
    assert out.sent == 1 and out.queued == 0
    got = receiver.received[0]
    assert got["path"] == "/hook" and "[FIRING] critical tail_coverage_collapse on news" == got["json"]["title"]
    assert "fp0123456789abcd" in got["json"]["message"]


def test_a_500_then_recovery_delivers_each_notification_exactly_once_across_runs(isolated, receiver):
    box, urls = Outbox(isolated / "outbox"), [_pd(receiver)]
    receiver.fail_next(2)
    first = deliver(box, urls, [_n("firing", rule="a", fp="fa"), _n("firing", rule="b", fp="fb")], retries=2, backoff=0)
    # the channel failed twice on the first: the second is not tried again in this run
    assert (first.sent, first.queued) == (0, 2) and receiver.received == [] and receiver.attempts == 2
    assert "HTTP 500" in first.errors[0] and "wait in the outbox for the next run" in first.errors[-1]
    # the next run flushes the outbox first, then its own notification; the same delivery is never queued twice
    second = deliver(box, urls, [_n("resolved", rule="a", fp="fa", run="run-2")], retries=2, backoff=0)
    assert (second.sent, second.queued) == (3, 0)
    seen = [(e["json"]["dedup_key"], e["json"]["event_action"]) for e in receiver.received]
    assert seen == [("fa", "trigger"), ("fb", "trigger"), ("fa", "resolve")]
    assert flush(box, urls).sent == 0 and len(receiver.received) == 3


def test_retries_back_off_and_an_unreachable_channel_waits_in_the_outbox_without_its_secret(isolated):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: nothing listens there
    box = Outbox(isolated / "outbox")
    waits = []
    url = f"pdevents+http://{SECRET}@127.0.0.1:{dead_port}/x"
    out = deliver(box, [url], [_n("firing")], retries=3, backoff=0.5, sleep=waits.append)
    assert out.queued == 1 and waits == [0.5, 1.0] and "unreachable" in out.errors[0]
    stored = "".join(p.read_text() for p in (isolated / "outbox").iterdir())
    assert SECRET not in stored and SECRET not in " ".join(out.errors)
    assert json.loads(stored)["attempts"] == 1 and json.loads(stored)["label"] == "pdevents+http://***"


def test_channel_urls_parse_and_redact():
    assert parse_urls(" json://a/b,\n pdevents://K  mailto://u:p@h ") == ["json://a/b", "pdevents://K", "mailto://u:p@h"]
    assert parse_urls(None) == [] and redact("slack://T/B/SECRET") == "slack://***"


def test_channel_urls_from_the_config_file_are_secret_when_settings_are_printed_or_serialised():
    from monitors.config import Settings

    s = Settings(alerts={"urls": [f"slack://{SECRET}/B/C"]})
    assert s.alerts.urls[0].get_secret_value() == f"slack://{SECRET}/B/C"
    for text in (repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json"))):
        assert SECRET not in text


def test_credentials_in_messages_are_scrubbed():
    from monitors.adapters.delivery import scrub

    msg = "OperationalError: could not connect to postgresql://mlflow:hunter2@db:5432/mlflow (timeout)"
    assert scrub(msg) == "OperationalError: could not connect to postgresql://***@db:5432/mlflow (timeout)"
