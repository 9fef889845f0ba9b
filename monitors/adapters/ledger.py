"""The landing zone's ledger: every batch file is counted exactly once (content hash -> run id).

A landing folder (or URL) is checked incrementally. For each file the ledger holds a row keyed by
(dataset, content SHA-256): ``claimed`` by one flow run while it is being checked, ``done`` with the MLflow
run id (or ``spooled:<id>``) that counted it. A claim is an INSERT on that key, so two runs that see the same
new file at once cannot both take it (the database's unique key decides, SQLite and PostgreSQL alike). A
claim older than its lease belongs to a run that died: the next run may take it over, after asking MLflow
whether the dead run got as far as logging (then the file is marked done with that run, not checked again).

A file whose check fails is given back and tried again by the next run, up to ``max_attempts`` times (table
``landing_failures``); then it is given up (a poison file is not retried forever; changed content is a new file).

A path whose content changed after it was counted is flagged once (table ``landing_changes``) and not
counted again: the new content is not silently added to the corpus, and the old count is not taken back.

The ledger is a SQLAlchemy database: SQLite under the state directory by default, PostgreSQL in production
(``landing.ledger_url``), shared by every worker.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

_META = sa.MetaData()
FILES = sa.Table(
    "landing_files", _META,
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # claimed | done
    sa.Column("owner", sa.String(200), nullable=False),  # the flow run that claimed it
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("run_id", sa.String(200)),
    sa.Column("done_at", sa.Float),
)
CHANGES = sa.Table(
    "landing_changes", _META,
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),  # the new content
    sa.Column("counted_sha256", sa.String(64), nullable=False),  # what was counted under that path
    sa.Column("seen_at", sa.Float, nullable=False),
)

FAILURES = sa.Table(
    "landing_failures", _META,
    sa.Column("dataset", sa.String(200), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("last_at", sa.Float, nullable=False),
)

HASHES = sa.Table(  # what a path held when last hashed: a file with the same size and mtime is not read again
    "landing_hashes", _META,
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime", sa.Float, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)


def file_sha256(url: str, opener) -> tuple[str, int]:
    """SHA-256 and size of a file's bytes, read in 1 MB blocks (``opener(url)`` gives a binary file)."""
    h, size = hashlib.sha256(), 0
    with opener(url) as fh:
        while block := fh.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


@dataclass(frozen=True)
class LandedFile:
    path: str
    sha256: str
    size: int


@dataclass
class Plan:
    """What one scan of a landing zone found, by the ledger."""

    new: list[LandedFile] = field(default_factory=list)  # to check now
    done: list[tuple[LandedFile, str]] = field(default_factory=list)  # (file, run id): counted before
    busy: list[LandedFile] = field(default_factory=list)  # claimed by a live run
    stale: list[tuple[LandedFile, dict[str, Any]]] = field(default_factory=list)  # claimed by a run that died
    changed: list[tuple[LandedFile, str, bool]] = field(default_factory=list)  # (file, counted sha, first time seen)
    duplicates: list[tuple[LandedFile, str]] = field(default_factory=list)  # same bytes as a counted file elsewhere
    given_up: list[tuple[LandedFile, dict[str, Any]]] = field(default_factory=list)  # failed max_attempts times


class Ledger:
    def __init__(self, url: str, lease_seconds: float = 3600.0, max_attempts: int = 3):
        self.url = url
        self.lease = lease_seconds
        self.max_attempts = max_attempts
        kwargs = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        self.engine = sa.create_engine(url, **kwargs)
        _META.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- reading ------------------------------------------------------------------------------------------
    def plan(self, dataset: str, files: list[LandedFile], now: float | None = None) -> Plan:
        """Sort the landing zone's files into new, done, busy, stale, changed and duplicate."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            rows = {r.sha256: r._asdict() for r in conn.execute(sa.select(FILES).where(FILES.c.dataset == dataset))}
            flagged = {(r.path, r.sha256) for r in conn.execute(sa.select(CHANGES).where(CHANGES.c.dataset == dataset))}
            failures = {r.sha256: r._asdict() for r in conn.execute(sa.select(FAILURES).where(
                FAILURES.c.dataset == dataset, FAILURES.c.attempts >= self.max_attempts))}
        by_path = {r["path"]: r for r in rows.values() if r["status"] == "done"}
        plan = Plan()
        for f in files:
            row = rows.get(f.sha256)
            if row is not None and row["status"] == "done":
                (plan.done if row["path"] == f.path else plan.duplicates).append((f, row["run_id"]))
            elif row is not None and now - row["claimed_at"] > self.lease:
                plan.stale.append((f, row))
            elif row is not None:
                plan.busy.append(f)
            elif f.sha256 in failures:
                plan.given_up.append((f, failures[f.sha256]))
            elif f.path in by_path:
                plan.changed.append((f, by_path[f.path]["sha256"], (f.path, f.sha256) not in flagged))
            else:
                plan.new.append(f)
        return plan

    def entries(self, dataset: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(FILES).order_by(FILES.c.claimed_at)
        if dataset is not None:
            q = q.where(FILES.c.dataset == dataset)
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(q)]

    # -- writing --------------------------------------------------------------------------------------------
    def claim(self, dataset: str, f: LandedFile, owner: str, now: float | None = None) -> bool:
        """Take a new file, or a stale claim, for ``owner``; False when another run has it or it is done."""
        now = time.time() if now is None else now
        try:
            with self.engine.begin() as conn:
                conn.execute(FILES.insert().values(dataset=dataset, sha256=f.sha256, path=f.path, size=f.size,
                                                   status="claimed", owner=owner, claimed_at=now))
            return True
        except sa.exc.IntegrityError:
            pass
        with self.engine.begin() as conn:  # compare-and-set on the stale claim as it was read
            row = conn.execute(sa.select(FILES).where(FILES.c.dataset == dataset, FILES.c.sha256 == f.sha256)).first()
            if row is None or row.status != "claimed" or now - row.claimed_at <= self.lease:
                return False
            taken = conn.execute(FILES.update().where(
                FILES.c.dataset == dataset, FILES.c.sha256 == f.sha256, FILES.c.status == "claimed",
                FILES.c.owner == row.owner, FILES.c.claimed_at == row.claimed_at,
            ).values(owner=owner, claimed_at=now, path=f.path))
            return taken.rowcount == 1

    def complete(self, dataset: str, sha256: str, owner: str, run_id: str, now: float | None = None) -> None:
        """Mark a claimed file counted by ``run_id``; raises if the claim is no longer ``owner``'s."""
        with self.engine.begin() as conn:
            done = conn.execute(FILES.update().where(
                FILES.c.dataset == dataset, FILES.c.sha256 == sha256, FILES.c.owner == owner,
                FILES.c.status == "claimed",
            ).values(status="done", run_id=run_id, done_at=time.time() if now is None else now))
            if done.rowcount != 1:
                raise RuntimeError(f"ledger: the claim on {sha256[:12]} of dataset {dataset!r} is no longer held by "
                                   f"{owner} (its lease of {self.lease:.0f} s ran out and another run took it)")

    def release(self, dataset: str, sha256: str, owner: str) -> None:
        """Give a claim back (the check failed): the next run tries the file again."""
        with self.engine.begin() as conn:
            conn.execute(FILES.delete().where(FILES.c.dataset == dataset, FILES.c.sha256 == sha256,
                                              FILES.c.owner == owner, FILES.c.status == "claimed"))

    def known_hashes(self) -> dict[str, tuple[int, float, str]]:
        """path -> (size, mtime, sha256) as last hashed."""
        with self.engine.connect() as conn:
            return {r.path: (r.size, r.mtime, r.sha256) for r in conn.execute(sa.select(HASHES))}

    def remember_hashes(self, rows: list[tuple[str, int, float, str]]) -> None:
        """Keep (path, size, mtime, sha256) of files just hashed, replacing what the paths held before."""
        if not rows:
            return
        with self.engine.begin() as conn:
            conn.execute(HASHES.delete().where(HASHES.c.path.in_([r[0] for r in rows])))
            conn.execute(HASHES.insert(), [{"path": p, "size": n, "mtime": m, "sha256": h} for p, n, m, h in rows])

    def fail(self, dataset: str, sha256: str, path: str, owner: str, error: str) -> int:
        """Give a claim back after a failed check and count the failure; returns the file's failures so far
        (at ``max_attempts`` the file is given up: :meth:`plan` lists it as such, no run takes it again)."""
        with self.engine.begin() as conn:
            conn.execute(FILES.delete().where(FILES.c.dataset == dataset, FILES.c.sha256 == sha256,
                                              FILES.c.owner == owner, FILES.c.status == "claimed"))
            key = (FAILURES.c.dataset == dataset) & (FAILURES.c.sha256 == sha256)
            before = conn.execute(sa.select(FAILURES.c.attempts).where(key)).scalar()
            values = {"path": path, "attempts": (before or 0) + 1, "last_error": error[:1000], "last_at": time.time()}
            if before is None:
                conn.execute(FAILURES.insert().values(dataset=dataset, sha256=sha256, **values))
            else:
                conn.execute(FAILURES.update().where(key).values(**values))
            return values["attempts"]

    def flag_changed(self, dataset: str, f: LandedFile, counted_sha256: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(CHANGES.insert().values(dataset=dataset, path=f.path, sha256=f.sha256,
                                                     counted_sha256=counted_sha256, seen_at=time.time()))
        except sa.exc.IntegrityError:
            pass  # flagged before


@contextmanager
def advisory_lock(url: str, name: str, wait: float) -> Iterator[bool]:
    """A PostgreSQL session advisory lock named ``name``, held while the block runs (by every worker that shares
    the database); yields False when ``wait`` seconds passed without it. It ends with its connection."""
    key = int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) - (1 << 63)  # a signed bigint
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"SET lock_timeout = {max(1, int(wait * 1000))}"))  # milliseconds
            try:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            except sa.exc.OperationalError:  # lock_timeout passed
                yield False
                return
            conn.commit()  # the lock is the session's: it outlives this transaction
            try:
                yield True
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
