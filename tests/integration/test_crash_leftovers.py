"""Issue 18, item 10: after ``kill -9`` of ``collapse-monitor check`` nothing it started keeps running: not
Prefect's temporary API server, not the shard workers (one of which used to block forever writing to the
dead parent's pipe). The temp-dir part is tests/unit/test_leftovers.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _env(state: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_HOME", "PREFECT_MEMO_STORE_PATH"))}
    # 2 worker processes however many CPUs; 1 MB shards so the workers have many to read
    env.update({"PYTHONPATH": str(REPO), "COLLAPSE_MONITOR_INGEST__WORKERS": "2", "COLLAPSE_MONITOR_INGEST__SHARD_MB": "1",
                "COLLAPSE_MONITOR_STATE_DIR": str(state)})
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead: it holds no memory and runs nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int(Path(d, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


@pytest.fixture(scope="module")
def killed_check(tmp_path_factory, austen):
    """A state dir with a reference, and a check of a 20 MB batch killed with SIGKILL mid-run (its Prefect server
    and 2 shard workers up). Returns the state dir, the environment, and what of the check's descendants was
    still running 5 s after the kill (what the fix ended is killed here so nothing leaks)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc")
    tmp_path = tmp_path_factory.mktemp("crash")
    state = tmp_path / "state"
    env = _env(state)
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"id": f"r{i}", "text": p["text"]}) + "\n" for i, p in enumerate(austen[:300])))
    subprocess.run(_cli("reference", "build", "--input", str(ref), "--dataset", "crash"), cwd=tmp_path, env=env,
                   check=True, timeout=180, capture_output=True)
    batch = tmp_path / "batch.jsonl"  # over 16 MB: read by worker processes
    with batch.open("w") as fh:
        i = 0
        while fh.tell() < 20 << 20:
            fh.write(json.dumps({"id": f"b{i}", "text": austen[i % len(austen)]["text"]}) + "\n")
            i += 1
    seen: set[int] = set()
    proc = subprocess.Popen(_cli("check", "--input", str(batch), "--dataset", "crash"), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            now = _descendants(proc.pid)
            seen |= set(now)
            workers = [p for p in now if "spawn_main" in _cmdline(p)]
            if len(workers) >= 2 and any("uvicorn" in _cmdline(p) for p in seen):  # mid-run: server and workers up
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the check never had its server and 2 shard workers running (exit {proc.poll()})")
        time.sleep(0.5)  # the workers are reading
        seen |= set(_descendants(proc.pid))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        until = time.monotonic() + 5
        while time.monotonic() < until and any(_alive(p) for p in seen):
            time.sleep(0.1)
        left = {p: _cmdline(p) for p in seen if _alive(p)}
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in seen | set(_descendants(proc.pid)):  # what the fix should have ended
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return tmp_path, env, left


def test_kill_9_of_a_check_leaves_no_process_behind(killed_check):
    _, _, left = killed_check
    assert not left, f"still running 5 s after kill -9 of the check: {left}"


def test_the_next_start_marks_the_dead_checks_flow_run_crashed(killed_check):
    tmp_path, env, _ = killed_check
    db = tmp_path / "state" / "prefect" / "prefect.db"
    assert _flow_run_states(db).get("check_incoming_data") == ["RUNNING"]  # what the kill left
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"id": f"s{i}", "text": f"a small batch, document number {i}."}) + "\n"
                             for i in range(30)))
    done = subprocess.run(_cli("check", "--input", str(small), "--dataset", "crash", "--json"), cwd=tmp_path, env=env,
                          timeout=180, capture_output=True, text=True)
    assert done.returncode in (0, 3), done.stderr[-2000:]
    assert json.loads(done.stdout)["batch"]["records"] == 30
    assert sorted(_flow_run_states(db)["check_incoming_data"]) == ["COMPLETED", "CRASHED"]


def _flow_run_states(db: Path) -> dict[str, list[str]]:
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute("select flow.name, flow_run.state_type from flow_run join flow on flow.id = flow_run.flow_id "
                           "order by flow_run.created").fetchall()
    out: dict[str, list[str]] = {}
    for name, state in rows:
        out.setdefault(name, []).append(state)
    return out
