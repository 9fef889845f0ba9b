"""The landing-zone ledger on SQLite (the PostgreSQL case runs in tests/integration/test_scheduled_stack.py)."""

import hashlib
import threading

import pytest

from monitors.adapters.ledger import LandedFile, Ledger, file_sha256


@pytest.fixture
def book(isolated):
    ledger = Ledger(f"sqlite:///{isolated}/ledger.db", lease_seconds=60)
    yield ledger
    ledger.close()


A = LandedFile("landing/a.jsonl", "a" * 64, 10)
B = LandedFile("landing/b.jsonl", "b" * 64, 20)


def test_a_file_is_counted_once(book):
    assert book.plan("news", [A, B]).new == [A, B]
    assert book.claim("news", A, "run-1", now=1000)
    assert not book.claim("news", A, "run-2", now=1001), "a live claim is not taken over"
    book.complete("news", A.sha256, "run-1", "mlflow-run-1", now=1002)
    plan = book.plan("news", [A, B], now=1003)
    assert plan.done == [(A, "mlflow-run-1")] and plan.new == [B]
    assert not book.claim("news", A, "run-3", now=5000), "a counted file is never claimed again"
    assert book.plan("other", [A]).new == [A], "datasets have their own ledgers"


def test_a_stale_claim_can_be_taken_over_once(book):
    assert book.claim("news", A, "dead-run", now=1000)
    plan = book.plan("news", [A], now=1030)
    assert plan.busy == [A] and not plan.stale
    plan = book.plan("news", [A], now=1061)
    assert [f for f, _ in plan.stale] == [A] and plan.stale[0][1]["owner"] == "dead-run"
    assert book.claim("news", A, "run-2", now=1061)
    assert not book.claim("news", A, "run-3", now=1062), "the takeover is itself a live claim"
    with pytest.raises(RuntimeError, match="no longer held by dead-run"):
        book.complete("news", A.sha256, "dead-run", "late")
    book.complete("news", A.sha256, "run-2", "mlflow-run-2")
    assert [e["run_id"] for e in book.entries("news")] == ["mlflow-run-2"]


def test_a_released_claim_is_tried_again(book):
    assert book.claim("news", A, "run-1")
    book.release("news", A.sha256, "run-1")
    assert book.plan("news", [A]).new == [A]


def test_changed_and_copied_files_are_flagged_not_recounted(book):
    assert book.claim("news", A, "run-1")
    book.complete("news", A.sha256, "run-1", "r1")
    edited = LandedFile(A.path, "c" * 64, 11)
    copy = LandedFile("landing/copy-of-a.jsonl", A.sha256, 10)
    plan = book.plan("news", [edited, copy])
    assert plan.changed == [(edited, A.sha256, True)] and plan.duplicates == [(copy, "r1")] and not plan.new
    book.flag_changed("news", edited, A.sha256)
    book.flag_changed("news", edited, A.sha256)  # idempotent
    assert book.plan("news", [edited]).changed == [(edited, A.sha256, False)], "reported once"


def test_concurrent_claims_have_one_winner(isolated):
    url = f"sqlite:///{isolated}/race.db"
    Ledger(url).close()
    wins = []

    def grab(owner):
        book = Ledger(url)
        wins.append(book.claim("news", A, owner))
        book.close()

    threads = [threading.Thread(target=grab, args=(f"run-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_file_sha256_streams(isolated):
    path = isolated / "f.bin"
    path.write_bytes(b"x" * (3 << 20))
    sha, size = file_sha256(str(path), lambda u: open(u, "rb"))
    assert size == 3 << 20 and sha == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
