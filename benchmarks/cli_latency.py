"""Fixed costs of the CLI (issue 20, item 6): wall time of whole ``collapse-monitor`` commands, each a fresh
subprocess as a user or a scheduler runs it, the median of --repeats runs after one warm-up run.

    PYTHONPATH=. .venv/bin/python benchmarks/cli_latency.py            # about 6 minutes with a cold LM cache
    PYTHONPATH=. .venv/bin/python benchmarks/cli_latency.py --json     # one JSON object on stdout

In a temporary folder it writes a reference of 1000 and a batch of 300 distinct Austen paragraphs, builds the
reference (not timed; the local LM scores it, cached by content in ~/.cache/collapse-monitor, so later runs are
quicker), then times:

- ``check`` of the 300 documents (``--recount``: the same file again) on Prefect's temporary (ephemeral) API,
  and against a running ``prefect server start`` on 127.0.0.1 (``PREFECT_API_URL``; started and stopped here);
  the warm-up run scores the batch with the local LM, so the timed runs find the scores cached;
- the ephemeral check again through the warm check service (``collapse-monitor warm``, flows/warm.py), which
  then runs Prefect's API itself: its CPU includes the service's child that ran it and that API's CPU meanwhile;
- the same check, ``history`` and ``alerts list`` through the warm check service beside the running server:
  their CPU includes the service's child that ran them;
- ``history`` and ``alerts list`` (read-only);
- two input errors: a batch path that matches nothing, and a dataset with no reference.

Targets (issue 20): check <= 8 s (ephemeral) and <= 4 s (server); history and alerts list <= 2 s; input errors
<= 2 s. The load average and the CPU seconds (the command's and those of the children it waited for, such as
Prefect's server: less sensitive to other jobs than wall time) are printed with the figures: on a shared
machine compare runs taken under similar load, or time two checkouts run for run with --baseline. ``--no-lm`` turns the local LM off (lm.enabled) for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"check (ephemeral API)": 8.0, "check (ephemeral, warm service)": 8.0, "check (Prefect server)": 4.0, "check (warm service)": 4.0, "history": 2.0,
           "alerts list": 2.0, "history (warm service)": 2.0, "alerts list (warm service)": 2.0,
           "input error: no such file": 2.0, "input error: no reference": 2.0}


def _paragraphs() -> list[str]:
    sys.path.insert(0, str(REPO))
    from monitors.demo.corpus import austen_paragraphs

    seen, out = set(), []
    for p in austen_paragraphs():
        t = p["text"]
        if t not in seen and len(t.split()) >= 5:
            seen.add(t)
            out.append(t)
    return out


def _write(path: Path, texts: list[str], prefix: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"{prefix}{i}", "text": t}) + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _children_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` has reaped (the warm service's children run the served commands)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _own_cpu(pid: int) -> float:
    """CPU seconds ``pid`` itself has used (the Prefect API a warm service runs, which serves its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: the warm service's pid while it runs: its reaped children's CPU counts as the command's
_SERVICE: list[int] = []
#: the pid of the Prefect API the warm service runs (no PREFECT_API_URL): its CPU while a command runs counts too
_API: list[int] = []


def _cli(args: list[str], env: dict, cwd: Path, expect: tuple[int, ...]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and the children it waited for, e.g. Prefect's server)."""
    served_before = (_children_cpu(_SERVICE[0]) if _SERVICE else 0.0) + (_own_cpu(_API[0]) if _API else 0.0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    seconds = time.perf_counter() - started
    if proc.returncode not in expect:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode} (expected {expect}):\n{proc.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    served = (_children_cpu(_SERVICE[0]) if _SERVICE else 0.0) + (_own_cpu(_API[0]) if _API else 0.0) - served_before
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + served


def _timed(name: str, args: list[str], env: dict, cwd: Path, repeats: int, expect=(0, 3), quiet=False,
           baseline: tuple[dict, Path] | None = None) -> dict:
    """``baseline``: (env, cwd) of another checkout, run alternately with this one (same load for both)."""
    _cli(args, env, cwd, expect)  # warm-up: first-time costs (LM scores, OS caches) are not fixed costs
    if baseline:
        _cli(args, *baseline, expect)
    runs, base = [], []
    for _ in range(repeats):
        runs.append(_cli(args, env, cwd, expect))
        if baseline:
            base.append(_cli(args, *baseline, expect))
    row = {"command": name, "median_s": statistics.median(r[0] for r in runs), "runs_s": [round(r[0], 2) for r in runs],
           "cpu_median_s": statistics.median(r[1] for r in runs), "target_s": TARGETS[name], "load_avg": _load()}
    row["met"] = row["median_s"] <= row["target_s"]
    if baseline:
        row.update(baseline_median_s=statistics.median(r[0] for r in base), baseline_runs_s=[round(r[0], 2) for r in base],
                   baseline_cpu_median_s=statistics.median(r[1] for r in base))
    if not quiet:
        print(f"  {name:<28} median {row['median_s']:5.2f} s, CPU {row['cpu_median_s']:5.2f} s  (target <= {row['target_s']:.0f} s: "
              f"{'met' if row['met'] else 'MISSED'})  runs {row['runs_s']}  load {row['load_avg']}", file=sys.stderr)
        if baseline:
            print(f"  {'  baseline':<28} median {row['baseline_median_s']:5.2f} s, CPU {row['baseline_cpu_median_s']:5.2f} s  "
                  f"runs {row['baseline_runs_s']}", file=sys.stderr)
    return row


def _start_prefect_server(home: Path, env: dict) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    server_env = {**env, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    server_env.pop("PREFECT_API_URL", None)
    log = open(home.parent / "prefect-server.log", "ab")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=server_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited {proc.returncode}; see {home.parent / 'prefect-server.log'}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, api
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("prefect server did not become healthy in 180 s")


def _start_service(env: dict, cwd: Path, log: str = "warm.log") -> subprocess.Popen:
    """``collapse-monitor warm`` (not timed: it imports once, then serves every timed run), its log in ``cwd/log``."""
    log_path = cwd / log
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "warm"], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=open(log_path, "wb"))
    deadline = time.monotonic() + 180
    while "ready" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"collapse-monitor warm did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5; median reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--no-lm", action="store_true", help="local LM off (lm.enabled false): quicker, not the issue's setting")
    ap.add_argument("--code", default=str(REPO), metavar="DIR",
                    help="the checkout whose CLI is timed (default this one; another, e.g. `git archive main`, for before/after)")
    ap.add_argument("--baseline", metavar="DIR",
                    help="another checkout (e.g. `git archive main | tar -x -C DIR`) timed alternately with --code, "
                         "run for run, so that both see the same load; its figures are printed under each row")
    ap.add_argument("--skip-server", action="store_true", help="do not time check against a running Prefect server")
    ap.add_argument("--skip-warm", action="store_true", help="do not time commands through the warm check service")
    args = ap.parse_args(argv)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("note: PYTHONDONTWRITEBYTECODE is set, so every run compiles the project's modules again (about 0.2 s "
              "CPU per command here); a user's installed copy has its bytecode cached", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the Prefect server started here is stopped

    with tempfile.TemporaryDirectory(prefix="cm-bench-latency-") as tmp:
        work = Path(tmp)
        texts = _paragraphs()
        _write(work / "ref.jsonl", texts[:1000], "r")
        _write(work / "batch.jsonl", texts[1000:1300], "b")
        def environment(code: str, state: Path) -> dict:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_"))}
            env.update({"PYTHONPATH": str(Path(code).resolve()), "COLLAPSE_MONITOR_STATE_DIR": str(state),
                        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
            if args.no_lm:
                env["COLLAPSE_MONITOR_LM__ENABLED"] = "false"
            return env

        env = environment(args.code, work / "state")
        base_env = environment(args.baseline, work / "baseline-state") if args.baseline else None
        print(f"building the reference in {work} (not timed)...", file=sys.stderr)
        _cli(["reference", "build", "--input", "ref.jsonl", "--dataset", "bench"], env, work, (0,))
        if base_env:
            _cli(["reference", "build", "--input", "ref.jsonl", "--dataset", "bench"], base_env, work, (0,))

        def timed(name, argv, extra=None, **kw):
            extra = extra or {}
            return _timed(name, argv, {**env, **extra}, work, args.repeats,
                          baseline=({**base_env, **extra}, work) if base_env else None, **kw)

        check = ["check", "--input", "batch.jsonl", "--dataset", "bench", "--recount"]
        rows = [timed("check (ephemeral API)", check)]
        if not args.skip_warm and not base_env:
            service = _start_service(env, work, "warm-ephemeral.log")
            _SERVICE.append(service.pid)
            _API.append(int(re.search(r"Prefect's API for the commands it runs: \S+ \(pid (\d+)\)",
                                      (work / "warm-ephemeral.log").read_text()).group(1)))
            try:
                rows.append(timed("check (ephemeral, warm service)", check))
            finally:
                _SERVICE.clear()
                _API.clear()
                service.terminate()
                service.wait(30)
        if not args.skip_server:
            (work / "prefect-server").mkdir()
            server, api = _start_prefect_server(work / "prefect-server", env)
            try:
                rows.append(timed("check (Prefect server)", check, {"PREFECT_API_URL": api}))
                if not args.skip_warm and not base_env:
                    service = _start_service({**env, "PREFECT_API_URL": api}, work)
                    _SERVICE.append(service.pid)
                    try:
                        rows.append(timed("check (warm service)", check, {"PREFECT_API_URL": api}))
                        rows.append(timed("history (warm service)", ["history", "--dataset", "bench"],
                                          {"PREFECT_API_URL": api}))
                        rows.append(timed("alerts list (warm service)", ["alerts", "list"], {"PREFECT_API_URL": api}))
                    finally:
                        _SERVICE.clear()
                        service.terminate()
                        service.wait(30)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(server.pid, signal.SIGKILL)
                    server.wait()
        rows.append(timed("history", ["history", "--dataset", "bench"]))
        rows.append(timed("alerts list", ["alerts", "list"]))
        rows.append(timed("input error: no such file", ["check", "--input", "missing.jsonl", "--dataset", "bench"],
                          expect=(2,)))
        rows.append(timed("input error: no reference", ["check", "--input", "batch.jsonl", "--dataset", "nothing"],
                          expect=(2,)))

    result = {"cpus": os.cpu_count(), "repeats": args.repeats, "lm": not args.no_lm, "code": str(args.code),
              "baseline": args.baseline, "results": rows}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'command':<28} {'median':>8} {'CPU':>8} {'target':>8}  met   (wall and CPU seconds, median of {args.repeats} after a warm-up; "
              f"{os.cpu_count()} CPUs; load average at the end {_load()})")
        for r in rows:
            print(f"{r['command']:<28} {r['median_s']:7.2f}s {r['cpu_median_s']:7.2f}s {r['target_s']:7.0f}s  "
                  f"{'yes' if r['met'] else 'NO'}" + (f"   baseline {r['baseline_median_s']:.2f}s / CPU "
                                                      f"{r['baseline_cpu_median_s']:.2f}s" if args.baseline else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
