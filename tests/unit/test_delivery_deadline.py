"""Issue 18, item 6: delivery has a deadline. A hanging channel is cut off by its timeout, a run's delivery by its
budget (a dead channel is not tried again in the same run, so it cannot starve the others), the outbox has a
cap and an expiry (items of a removed channel are dropped), and two concurrent flushes never send one item twice."""

import json
import socket
import threading
import time

from monitors.adapters.delivery import Outbox, deliver, flush

SECRET = "R0UT1NGKEYs3cr3t"


def _n(run="run-1", fp="fp1"):
    return {"kind": "firing", "rule": "r", "severity": "critical", "status": "firing", "fingerprint": fp,
            "value": 1.0, "threshold": 0.5, "summary": "s", "dataset": "news", "run_id": run}


def _hanging_port(stack):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(50)  # accepts connections (the kernel does) and never answers
    stack.append(s)
    return s.getsockname()[1]


def test_a_hanging_channel_is_cut_off_and_cannot_starve_a_working_one(isolated, receiver):
    keep = []
    hanging = f"pdevents+http://{SECRET}@127.0.0.1:{_hanging_port(keep)}/x"
    good = f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/x"
    box = Outbox(isolated / "outbox")
    for i in range(20):  # earlier runs left these for the hanging channel
        box.put(_n(f"old-{i}", fp=f"f{i}"), 0, "pdevents+http://***")
    started = time.monotonic()
    out = deliver(box, [hanging, good], [_n("now")], retries=2, backoff=0, timeout=0.3, budget=5)
    took = time.monotonic() - started
    assert took < 2.5, took  # one try per retry on the hanging channel, not 21 x 2 timeouts
    assert [r["json"]["dedup_key"] for r in receiver.received] == ["fp1"]  # this run's item on the good channel
    assert out.sent == 1 and out.queued == 21 and SECRET not in " ".join(out.errors)
    for s in keep:
        s.close()


def test_the_budget_bounds_a_run_however_many_channels_hang(isolated):
    keep = []
    urls = [f"pdevents+http://{SECRET}@127.0.0.1:{_hanging_port(keep)}/x" for _ in range(6)]
    started = time.monotonic()
    out = deliver(Outbox(isolated / "outbox"), urls, [_n()], retries=3, backoff=0, timeout=0.5, budget=1.0)
    assert time.monotonic() - started < 1.8
    assert out.sent == 0 and out.queued == 6 and any("budget" in e for e in out.errors)
    for s in keep:
        s.close()


def test_expired_items_and_items_of_a_removed_channel_are_dropped_with_an_error(isolated, receiver):
    box = Outbox(isolated / "outbox")
    box.put(_n("old"), 0, "pdevents+http://***")
    box.put(_n("gone"), 3, "json://***")  # channel #4 is no longer configured
    path = next(p for p in box.folder.glob("*.json") if json.loads(p.read_text())["notification"]["run_id"] == "old")
    item = json.loads(path.read_text())
    path.write_text(json.dumps({**item, "queued": time.time() - 80 * 3600}))
    out = flush(box, [f"pdevents+http://{SECRET}@127.0.0.1:{receiver.port}/x"], backoff=0, max_age_hours=72)
    assert box.pending() == [] and receiver.received == [] and out.queued == 0
    assert any("expired" in e for e in out.errors) and any("no longer configured" in e for e in out.errors)


def test_the_outbox_is_capped_oldest_dropped_first(isolated):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    box = Outbox(isolated / "outbox")
    for i in range(12):
        box.put(_n(f"run-{i}"), 0, "pdevents+http://***")
        time.sleep(0.002)
    out = deliver(box, [f"pdevents+http://{SECRET}@127.0.0.1:{dead}/x"], [_n("new")], retries=1, backoff=0, max_items=5)
    left = [i["notification"]["run_id"] for i in box.pending()]
    assert len(left) == 5 and "new" in left and "run-0" not in left and out.queued == 5
    assert any("dropped 8" in e for e in out.errors)


def test_two_concurrent_flushes_send_each_item_once(isolated):
    box = Outbox(isolated / "outbox")
    for i in range(6):
        box.put(_n(f"run-{i}", fp=f"f{i}"), 0, "json://***")
    sent, lock = [], threading.Lock()

    def slow_send(url, n):
        time.sleep(0.05)
        with lock:
            sent.append(n["run_id"])

    threads = [threading.Thread(target=flush, args=(Outbox(isolated / "outbox"), ["json://h/x"]),
                                kwargs={"send": slow_send, "backoff": 0}) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == sorted(f"run-{i}" for i in range(6)) and box.pending() == []
