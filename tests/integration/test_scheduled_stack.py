"""The production stack, really run: a throwaway PostgreSQL, `prefect server start` on it, `mlflow server` on it
(PostgreSQL backend store, a local artifact root), the landing-zone ledger on it too, and `collapse-monitor
serve` with a 20-second schedule. Batch files dropped into a landing folder are checked by scheduled runs
that fire on their own, each exactly once; a file changed after it was checked is flagged, not re-counted;
a collapsed batch's alert reaches the MLflow server; no two runs of the deployment overlap; the dead man's
switch stays silent while runs complete and pages on-call once serve stops. Everything is stopped by PID at the
end."""

import functools
import json
import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from monitors.core.rules import fingerprint
from tests import stack
from tests.conftest import REPO, write_jsonl

pytestmark = pytest.mark.integration

DATASET = "stack"
KEY = "stack-routing-key"
EVERY = 20  # seconds between scheduled runs (not less: on a slow machine runs would overlap)
# The dead man's switch's window is max(2 * EVERY, alerts.dead_man_min_seconds). Its default floor of 60 s is
# lowered to 50 s for this test, which shortens every wait on the switch. The tightest spot is the first window,
# which opens when serve installs the switch, about when the schedule is anchored: the first run is due one
# interval later and has the rest of the window, WINDOW - EVERY = 30 s, to complete. Here it started 24-29 s after
# serve and had checked both files 8-10 s later (the timing line shows it); a 40 s window left too little of that
# for a slower machine.
DEAD_MAN_MIN = 50
WINDOW = max(2 * EVERY, DEAD_MAN_MIN)
# the switch must not have paged this long after serve started: two windows have closed (plus the few seconds
# serve takes to install it, the 5 s evaluation loop, delivery); 150 s with the 60 s window
QUIET_UNTIL = 2 * WINDOW + 30


def _cli(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("collapse-monitor")), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _flow_runs(api: str) -> list[dict]:
    import httpx

    resp = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"is_null_": False}},
                                                        "sort": "START_TIME_ASC", "limit": 200}, timeout=30)
    resp.raise_for_status()
    return resp.json()


_wait = functools.partial(stack.wait_until, every=2)  # each poll asks the Prefect API


def _human(austen, start: int, n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}-{i}", "text": p["text"], "created_at": "2020-05-01"} for i, p in enumerate(austen[start:start + n])]


@pytest.fixture
def servers(tmp_path_factory):
    home = tmp_path_factory.mktemp("stack")
    pg = stack.Postgres().start()
    procs = []
    try:
        for db in ("prefect", "mlflow", "ledger"):
            pg.create_database(db)
        # both servers start at once (about 8 s each, one after the other before), then both are waited for
        prefect, api = stack.start_prefect(pg, home, wait=False)
        procs.append(prefect)
        mlflow, uri = stack.start_mlflow(pg, home, wait=False)
        procs.append(mlflow)
        stack.wait_healthy(prefect, api, home)
        stack.wait_healthy(mlflow, uri, home)
        yield {"home": home, "pg": pg, "api": api, "mlflow": uri, "procs": procs}
    finally:
        for proc in reversed(procs):
            stack.stop(proc)
        pg.stop()


def test_scheduled_runs_fire_count_each_file_once_and_never_overlap(servers, austen, receiver, capsys):
    home, pg, api, mlflow_uri = servers["home"], servers["pg"], servers["api"], servers["mlflow"]
    landing = home / "landing"
    landing.mkdir()
    env = stack.base_env(home) | {
        "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_uri,
        "COLLAPSE_MONITOR_STATE_DIR": str(home / "state"),
        "COLLAPSE_MONITOR_LANDING__LEDGER_URL": pg.url("ledger"),
        "COLLAPSE_MONITOR_LANDING__SETTLE_SECONDS": "1",
        "COLLAPSE_MONITOR_SCHEDULES__LANDING": str(landing),
        "COLLAPSE_MONITOR_SCHEDULES__DATASET": DATASET,
        "COLLAPSE_MONITOR_INDICATORS__DRIFT": "false",
        # the schedules are under test, not the share: the local LM would add its scoring to every run
        "COLLAPSE_MONITOR_LM__ENABLED": "false",
        "COLLAPSE_MONITOR_ALERT_URLS": f"pdevents+http://{KEY}@127.0.0.1:{receiver.port}/v2/enqueue",
        "COLLAPSE_MONITOR_ALERTS__DEAD_MAN_MIN_SECONDS": str(DEAD_MAN_MIN),
    }
    rows = list(austen)
    random.Random(5).shuffle(rows)
    ref = write_jsonl(home / "ref.jsonl", _human(rows, 0, 1500, "ref"))
    built = _cli(["reference", "build", "--input", str(ref), "--dataset", DATASET], env, home)
    assert built.returncode == 0, built.stderr[-3000:]

    write_jsonl(landing / "batch-a.jsonl", _human(rows, 2000, 150, "a"))
    write_jsonl(landing / "batch-b.jsonl", _human(rows, 2200, 150, "b"))
    log = home / "serve.log"
    started = time.time()
    serve = stack.start([str(Path(sys.executable).with_name("collapse-monitor")), "serve", "--data-every", f"{EVERY}s"],
                        log, env, cwd=home)
    servers["procs"].append(serve)
    engine = sa.create_engine(pg.url("ledger"))

    def done_files():
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text("select path, sha256, run_id from landing_files where status = 'done'")).all()
        except sa.exc.ProgrammingError:  # the first run has not created the ledger yet
            return []

    _wait("the first scheduled run to check both files", lambda: len(done_files()) == 2, 240, log)
    first_fired = time.time() - started
    first = done_files()
    # A file changed after it was checked, and a collapsed batch (three sentences over and over).
    write_jsonl(landing / "batch-a.jsonl", _human(rows, 2000, 149, "a"))
    bland = ["The weather is nice today and we are all very happy about it.", "It was a good day for everyone here.",
             "We are happy that the weather is so nice today."]
    write_jsonl(landing / "batch-c.jsonl", [{"id": f"c-{i}", "text": bland[i % 3], "created_at": "2025-06-01"}
                                            for i in range(700)])
    _wait("a later scheduled run to check the collapsed batch", lambda: len(done_files()) == 3, 240, log)
    _wait("one more scheduled run after that", lambda: len([r for r in _flow_runs(api)
                                                            if r["state_type"] in ("COMPLETED", "CANCELLED")]) >= 3,
          120, log)
    # The dead man's switch stays silent while runs complete: two of its windows have closed by now (the
    # first opens when serve installs it, a few seconds after start), with time for a page to have arrived.
    time.sleep(max(0.0, started + QUIET_UNTIL - time.time()))
    quiet_for = time.time() - started
    assert not _dead_man(receiver), (f"the dead man's switch paged while runs completed (checked {quiet_for:.0f} s "
                                      f"after serve started): {_dead_man(receiver)}")
    stack.stop(serve, signal.SIGTERM)
    stopped = time.time()
    assert serve.returncode is not None
    serve_log = log.read_text()
    assert "automation: collapse-monitor dead man's switch: monitor_data/data-stack" in serve_log, serve_log[-3000:]
    assert KEY not in serve_log

    # Exactly once: three files, three check runs in MLflow, each tagged with its file's content hash.
    ledger_rows = done_files()
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name(f"collapse-monitor/{DATASET}")
    checks = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'")
    assert len(checks) == 3, [c.data.tags.get("collapse.batch") for c in checks]
    assert sorted(c.data.tags["collapse.content_sha256"] for c in checks) == sorted(r.sha256 for r in ledger_rows)
    assert sorted(c.info.run_id for c in checks) == sorted(r.run_id for r in ledger_rows)
    assert sorted(Path(r.path).name for r in ledger_rows) == ["batch-a.jsonl", "batch-b.jsonl", "batch-c.jsonl"]
    with engine.connect() as conn:
        changed = conn.execute(sa.text("select path, counted_sha256 from landing_changes")).all()
    assert [Path(p).name for p, _ in changed] == ["batch-a.jsonl"]
    assert changed[0][1] == next(r.sha256 for r in first if r.path.endswith("batch-a.jsonl"))
    engine.dispose()

    # The collapsed batch's alert reached the MLflow server.
    collapsed = next(c for c in checks if c.data.tags["collapse.batch"] == "batch-c.jsonl")
    assert int(collapsed.data.tags["collapse.alerts.firing"]) >= 1
    assert collapsed.data.tags["collapse.alerts.max_severity"] == "critical"
    assert any(k.startswith("collapse.alert.") and v == "firing" for k, v in collapsed.data.tags.items())

    # Fired on their own, never overlapping: every run of the deployment was created by the scheduler.
    runs = _flow_runs(api)
    parents = [r for r in runs if r["name"].startswith(f"monitor {DATASET}")]
    assert parents and all(r["auto_scheduled"] for r in parents), [(r["name"], r["auto_scheduled"]) for r in parents]
    ran = sorted((r for r in parents if r["start_time"] and r["end_time"]), key=lambda r: r["start_time"])
    assert len(ran) >= 2  # the first run checked a and b, a later one c (a run that would overlap is cancelled)
    spans = [(datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"])) for r in ran]
    for (s1, e1), (s2, _) in zip(spans, spans[1:]):
        assert s2 >= e1, f"runs overlap: one ran {s1}..{e1}, the next started {s2}"
    (home / "ledger.json").write_text(json.dumps([r._asdict() for r in ledger_rows], indent=1))
    fired = min(datetime.fromisoformat(r["start_time"]).timestamp() for r in ran) - started
    timing = (f"\nfirst scheduled run started {fired:.0f} s after serve started and had checked both files at "
              f"{first_fired:.0f} s; {len(parents)} runs ({len(ran)} ran); ledger: {home / 'ledger.json'}")

    # The collapsed batch paged on-call from the scheduled run (PagerDuty-style receiver on 127.0.0.1).
    assert any(e["json"]["event_action"] == "trigger" and "critical" in e["json"]["payload"]["summary"]
               and e["json"]["payload"]["source"] == f"collapse-monitor/{DATASET}" for e in receiver.received)

    # The worker route: deployments/prefect.yaml through `prefect deploy` and a process worker.
    _worker_route(servers, env, landing, austen_rows=rows)

    # The serve process is gone: the Prefect server's dead man's switch pages on-call on its own, two to three
    # windows after the last run completed (Prefect drops a window that saw a run and opens the next one a window
    # later, at its next proactive evaluation), so up to ~3 windows and a few seconds after serve stopped; the
    # worker route took some.
    page = _wait("the dead man's switch", lambda: _dead_man(receiver), 240, home / "prefect-server.log")[0]
    assert page["routing_key"] == KEY and page["dedup_key"] == fingerprint("schedule_dead", DATASET)
    assert page["payload"]["summary"] == f"[FIRING] critical schedule_dead on {DATASET}"
    assert (f"No run of monitor_data/data-stack completed in the last {WINDOW} s (twice its interval)"
            in page["payload"]["custom_details"]["summary"])
    with capsys.disabled():  # in the CI log too
        print(timing + f"; the dead man's switch ({WINDOW} s window) was silent {quiet_for:.0f} s after serve started "
                       f"and paged {time.time() - stopped:.0f} s after serve stopped")


def _dead_man(receiver) -> list[dict]:
    return [e["json"] for e in receiver.received if "schedule_dead" in e["json"].get("payload", {}).get("summary", "")]


def _prefect(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _worker_route(servers, env, landing, austen_rows):
    import httpx

    home, api = servers["home"], servers["api"]
    env = env | {"COLLAPSE_MONITOR_PROBE_MODELS": "models:/none@production",
                 "COLLAPSE_MONITOR_SCHEDULES__PROBE_SET": str(home / "probes.jsonl"), "PWD": str(REPO)}
    _prefect(["work-pool", "create", "collapse-monitor", "--type", "process"], env, home)
    _prefect(["deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], env, REPO)
    assert not (REPO / ".prefect").exists() or (REPO / ".prefect").is_dir()  # ignored by git if Prefect made it
    deps = {d["name"]: d for d in httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()}
    assert deps["data"]["parameters"] == {"landing": str(landing), "dataset": DATASET}
    assert deps["data"]["schedules"][0]["schedule"]["interval"] == 10800
    assert deps["probes"]["schedules"][0]["schedule"]["interval"] == 21600
    for name in ("data", "probes"):
        limit = deps[name]["global_concurrency_limit"]
        assert limit["limit"] == 1 and deps[name]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    write_jsonl(landing / "batch-d.jsonl", _human(austen_rows, 2500, 150, "d"))
    time.sleep(1.5)  # settle
    worker = stack.start([str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool",
                          "collapse-monitor"], home / "worker.log", env, cwd=home)
    servers["procs"].append(worker)
    run = json.loads(httpx.post(f"{api}/deployments/{deps['data']['id']}/create_flow_run", json={}, timeout=30).text)

    def state():
        return httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()["state_type"]

    final = _wait("the worker to run the deployment", lambda: state() in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                  and state(), 240, home / "worker.log")
    stack.stop(worker, timeout=15)
    assert final == "COMPLETED", (home / "worker.log").read_text()[-4000:]
    client = MlflowClient(servers["mlflow"])
    exp = client.get_experiment_by_name(f"collapse-monitor/{DATASET}")
    batches = sorted(c.data.tags["collapse.batch"] for c in client.search_runs([exp.experiment_id],
                                                                              "tags.`collapse.kind` = 'check'"))
    assert batches == ["batch-a.jsonl", "batch-b.jsonl", "batch-c.jsonl", "batch-d.jsonl"]
