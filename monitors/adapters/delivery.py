"""On-call delivery of alert notifications, with an outbox so that none is lost.

Channels are URLs (from the config file's ``alerts.urls`` or ``COLLAPSE_MONITOR_ALERT_URLS``, whitespace- or
comma-separated). Two kinds:

* ``pdevents://ROUTING_KEY`` — PagerDuty Events v2, sent here (Apprise's PagerDuty plugin can only trigger):
  ``dedup_key`` = the alert's fingerprint, ``event_action`` = ``trigger`` for firing/repeat and ``resolve``
  for resolved, so PagerDuty opens and closes one incident per alert. ``pdevents+http://KEY@HOST:PORT/PATH``
  (or ``+https``) posts the same events to another endpoint (a proxy, a test receiver).
* anything else goes through Apprise (``slack://``, ``json://`` generic webhook, ``mailto://``, ...).
  Apprise reports failure by returning False; that is checked, never ignored.

Every (notification, channel) pair is first written to the outbox (a folder of small JSON files under the
state directory), then sent with retries and backoff, and removed only once the channel accepted it. What
still fails stays in the outbox and the next run sends it first (:func:`flush`). Channel URLs hold secrets:
outbox files store the channel's index and a redacted label, never the URL, and nothing here logs a URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitors.adapters.files import atomic_write_json, describe
from monitors.adapters.locks import file_lock
from monitors.config import split_list

PD_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_PD = re.compile(r"^pdevents(?:\+(?P<proto>https?))?://(?P<key>[^@/]+)(?:@(?P<rest>.+))?$")
def parse_urls(text: str | None) -> list[str]:
    """Channel URLs from a whitespace- or comma-separated string."""
    return split_list(text)


def scrub(text: str) -> str:
    """Credentials in URLs inside a message (``scheme://user:password@host``) replaced by ``***``."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


def redact(url: str) -> str:
    """A label for a channel that is safe to log: its scheme only."""
    return url.split("://", 1)[0] + "://***" if "://" in url else "***"


@dataclass(frozen=True)
class Outcome:
    sent: int
    queued: int  # still in the outbox after this attempt
    errors: list[str]


def _message(n: dict[str, Any]) -> tuple[str, str]:
    kind = {"firing": "FIRING", "repeat": "STILL FIRING", "resolved": "RESOLVED"}[n["kind"]]
    title = f"[{kind}] {n['severity']} {n['rule']} on {n['dataset']}"
    value = "n/a" if n.get("value") is None else f"{n['value']:.4g}"
    body = (f"{n['summary']}\nvalue {value}, threshold {n.get('threshold')}; "
            f"fingerprint {n['fingerprint']}; run {n.get('run_id', '')}")
    return title, body


def _post_json(url: str, payload: dict, timeout: float) -> None:
    req = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from the operator's config
        if resp.status >= 300:
            raise OSError(f"HTTP {resp.status}")


@contextmanager
def _quiet_apprise() -> Iterator[None]:
    """Apprise logs a URL it cannot parse, secret and all: keep its logger quiet meanwhile."""
    logger = logging.getLogger("apprise")
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def url_problem(url: str) -> str | None:
    """Why a channel URL cannot work, without the URL (it holds secrets); None when it can."""
    if url.startswith("pdevents"):
        pd = pagerduty(url)
        if pd is None:
            return f"{redact(url)} is not pdevents://ROUTING_KEY or pdevents+http(s)://ROUTING_KEY@HOST[:PORT]/PATH"
        try:
            parts = urllib.parse.urlsplit(pd[0])
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            return f"{redact(url)} has a host or port that cannot be read"
        return None if parts.hostname else f"{redact(url)} has no host"
    import apprise

    with _quiet_apprise():
        known = apprise.Apprise.instantiate(url) is not None
    return None if known else f"{redact(url)} is not a channel URL Apprise understands"


def pagerduty(url: str) -> tuple[str, str] | None:
    """(events endpoint, routing key) of a ``pdevents://KEY`` or ``pdevents+http(s)://KEY@HOST/PATH`` URL."""
    m = _PD.match(url)
    if not m:
        return None
    return (PD_EVENTS_URL if not m["rest"] else f"{m['proto'] or 'https'}://{m['rest']}"), m["key"]


def send_one(url: str, n: dict[str, Any], timeout: float = 10.0) -> None:
    """Deliver one notification to one channel, or raise OSError saying why (without the URL)."""
    title, body = _message(n)
    pd = pagerduty(url)
    if pd:
        endpoint, key = pd
        event = {"routing_key": key, "dedup_key": n["fingerprint"],
                 "event_action": "resolve" if n["kind"] == "resolved" else "trigger"}
        if event["event_action"] == "trigger":
            event["payload"] = {"summary": title, "source": f"collapse-monitor/{n['dataset']}",
                                "severity": "critical" if n["severity"] == "critical" else "warning",
                                "custom_details": {"summary": n["summary"], "value": n.get("value"),
                                                   "threshold": n.get("threshold"), "run_id": n.get("run_id")}}
        try:
            _post_json(endpoint, event, timeout)
        except urllib.error.HTTPError as exc:
            raise OSError(f"PagerDuty events endpoint answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise OSError(f"PagerDuty events endpoint unreachable ({getattr(exc, 'reason', exc)})") from None
        return
    import apprise

    ap = apprise.Apprise()
    with _quiet_apprise():
        added = ap.add(url)
    if not added:
        raise OSError(f"{redact(url)} is not a channel URL Apprise understands")
    for server in ap:  # Apprise's own default is 4 s per socket operation
        server.socket_connect_timeout = server.socket_read_timeout = timeout
    kind = apprise.NotifyType.SUCCESS if n["kind"] == "resolved" else (
        apprise.NotifyType.FAILURE if n["severity"] == "critical" else apprise.NotifyType.WARNING)
    if not ap.notify(title=title, body=body, notify_type=kind):
        raise OSError(f"{redact(url)} did not accept the notification")


class Outbox:
    """Pending deliveries, one JSON file each, named by a stable id (the same delivery is never queued twice)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a full disk: put() says so per item, and deliver() sends what it could not queue directly

    @staticmethod
    def delivery_id(n: dict[str, Any], channel: int) -> str:
        key = json.dumps([n.get("run_id"), n["fingerprint"], n["kind"], channel])
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    @classmethod
    def item(cls, n: dict[str, Any], channel: int, label: str) -> dict[str, Any]:
        return {"id": cls.delivery_id(n, channel), "queued": time.time(), "channel": channel, "label": label,
                "attempts": 0, "last_error": None, "notification": n}

    def put(self, n: dict[str, Any], channel: int, label: str) -> str:
        """Queue a delivery; raises OSError (naming the file) when it cannot be written (a full disk)."""
        item = self.item(n, channel, label)
        path = self.folder / f"{item['id']}.json"
        if not path.exists():
            atomic_write_json(path, item)  # a crash or a full disk leaves the old file or the new one, not half of one
        return item["id"]

    def pending(self) -> list[dict[str, Any]]:
        items = []
        for p in (self.folder.glob("*.json") if self.folder.is_dir() else []):
            try:
                items.append(json.loads(p.read_text()))
            except (OSError, json.JSONDecodeError):
                continue  # a file being replaced right now; the next flush sees it
        return sorted(items, key=lambda d: (d["queued"], d["id"]))

    def done(self, did: str) -> None:
        (self.folder / f"{did}.json").unlink(missing_ok=True)

    def failed(self, item: dict[str, Any], error: str) -> str | None:
        """Keep a delivery that failed, with its error, for the next run; returns why it could not be kept (a
        full disk: an item already queued stays as it was; one that never was is lost), else None."""
        item = {k: v for k, v in item.items() if k != "unqueued"} | {"attempts": item["attempts"] + 1,
                                                                      "last_error": error}
        try:
            atomic_write_json(self.folder / f"{item['id']}.json", item)
        except OSError as exc:
            return describe(exc)
        return None


def _safe_error(exc: Exception, url: str) -> str:
    """An unexpected sender error as text, with neither the channel URL nor any credential in it."""
    return scrub(f"{type(exc).__name__}: {exc}".replace(url, redact(url)))[:300]


def flush(outbox: Outbox, urls: list[str], *, retries: int = 3, backoff: float = 1.0, timeout: float = 10.0,
          budget: float = 60.0, max_age_hours: float = 72.0, send: Callable[[str, dict], None] | None = None,
          sleep: Callable[[float], None] = time.sleep, unqueued: list[dict[str, Any]] = ()) -> Outcome:
    """Send everything in the outbox, oldest first, each with ``retries`` tries and exponential backoff.

    A send that fails in any way (not only OSError: a bug or a URL the sender chokes on) leaves its delivery in
    the outbox with the error, and the others are still sent: delivery never fails the run that delivers.
    Deadlines: each try waits at most ``timeout`` seconds, the whole flush at most ``budget`` (the rest waits
    for the next run), and a channel that failed is not tried again in this flush, so a dead channel costs one
    delivery's tries per run and cannot starve the others. Items older than ``max_age_hours`` or of a channel
    no longer configured are dropped with an error. One flush at a time per outbox (a lock file): two runs
    delivering at once never send an item twice.

    ``unqueued``: this run's deliveries that could not be written to the outbox (a full disk); they are sent
    after the outbox's, and only kept for the next run if the outbox can take them by then. Delivery is over
    the network: a full disk must not keep on-call from hearing about it."""
    deadline = time.monotonic() + budget
    try:
        lock = file_lock(outbox.folder / ".lock", timeout=budget)
        locked = lock.__enter__()
    except OSError as exc:  # not even the lock file can be made: send what this run has, from memory
        return _flush(outbox, urls, retries, backoff, timeout, deadline, max_age_hours, send, sleep, list(unqueued),
                      [f"the outbox {outbox.folder} cannot be used ({describe(exc)}): only this run's "
                       f"notifications were sent, from memory"], queued=False)
    try:
        if not locked:
            return _flush(outbox, urls, retries, backoff, timeout, deadline, max_age_hours, send, sleep,
                          list(unqueued), [f"another run kept the outbox busy for the whole delivery budget "
                                           f"({budget:g} s): this run's notifications wait in it"], queued=False)
        return _flush(outbox, urls, retries, backoff, timeout, deadline, max_age_hours, send, sleep, list(unqueued))
    finally:
        lock.__exit__(None, None, None)


def _flush(outbox, urls, retries, backoff, timeout, deadline, max_age_hours, send, sleep, unqueued=(), notes=(),
           queued=True) -> Outcome:
    """Send the outbox's items (when ``queued``: this run holds its lock) and then ``unqueued`` ones."""
    sent, errors, failed_channels, skipped = 0, list(notes), set(), 0
    for item in (outbox.pending() if queued else []) + [{**u, "unqueued": True} for u in unqueued]:
        channel = f"channel #{item['channel'] + 1}"
        if item["channel"] >= len(urls):
            outbox.done(item["id"])
            errors.append(f"{item['label']}: {channel} is no longer configured: its notification was dropped")
            continue
        if time.time() - item["queued"] > max_age_hours * 3600:
            outbox.done(item["id"])
            errors.append(f"{item['label']}: a notification queued {max_age_hours:g} h ago or more expired "
                          f"undelivered and was dropped (last error: {item['last_error']})")
            continue
        if item["channel"] in failed_channels or time.monotonic() >= deadline:
            skipped += 1
            lost = outbox.failed(item, "not tried: its channel failed this run, or the delivery budget ran out"
                                 ) if item.get("unqueued") else None
            if lost:
                errors.append(f"{item['label']}: a {item['notification']['rule']} notification could not be "
                              f"sent nor kept in the outbox ({lost}): it is lost")
            continue
        url = urls[item["channel"]]
        for attempt in range(retries):
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise OSError(f"the delivery budget ran out before {channel} answered")
                (send or (lambda u, n: send_one(u, n, timeout=min(timeout, left))))(url, item["notification"])
            except Exception as exc:  # noqa: BLE001 - whatever a channel does wrong, the delivery waits in the outbox
                if attempt + 1 == retries or deadline - time.monotonic() <= 0:
                    error = str(exc) if isinstance(exc, OSError) else _safe_error(exc, url)
                    lost = outbox.failed(item, error)
                    errors.append(f"{item['label']}: {error}")
                    if lost and item.get("unqueued"):
                        errors.append(f"{item['label']}: a {item['notification']['rule']} notification could not be "
                                      f"sent nor kept in the outbox ({lost}): it is lost")
                    failed_channels.add(item["channel"])
                    break
                sleep(min(backoff * 2 ** attempt, max(0.0, deadline - time.monotonic())))
                continue
            outbox.done(item["id"])
            sent += 1
            break
    if skipped:
        errors.append(f"{skipped} notification(s) wait in the outbox for the next run (their channel failed "
                      f"this run, or the delivery budget ran out)")
    return Outcome(sent, len(outbox.pending()), errors)


def deliver(outbox: Outbox, urls: list[str], notifications: list[dict[str, Any]], max_items: int = 1000,
            **kw) -> Outcome:
    """Queue this run's notifications on every channel, then flush the whole outbox (older ones first).
    Past ``max_items`` queued deliveries, the oldest are dropped (with an error) to make room."""
    unqueued, problems = [], []
    for n in notifications:
        for i, url in enumerate(urls):
            try:
                outbox.put(n, i, redact(url))
            except OSError as exc:  # a full disk: send it anyway, from memory
                unqueued.append(Outbox.item(n, i, redact(url)))
                problems.append(describe(exc))
    excess = outbox.pending()[:-max_items]
    for item in excess:
        outbox.done(item["id"])
    out = flush(outbox, urls, unqueued=unqueued, **kw)
    if problems:
        out.errors.insert(0, f"{len(problems)} notification(s) could not be written to the outbox "
                             f"({problems[0]}): sent from memory; what failed to send is lost")
    if excess:
        out.errors.insert(0, f"the outbox holds at most {max_items} notifications: dropped {len(excess)} of the "
                             f"oldest undelivered")
    return out
