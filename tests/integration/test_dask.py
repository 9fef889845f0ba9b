"""Scale-out: `check --task-runner dask` against a real Dask cluster on 127.0.0.1 (`dask scheduler` and two
`dask worker` processes, started and stopped by PID) gets the same indicators as the local run, and the
shards really ran on both workers."""

import json
import math
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tests import stack
from tests.conftest import write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("dask")
    port = stack.free_port()
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [stack.start([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                         home / "scheduler.log")]
    address = f"tcp://127.0.0.1:{port}"
    try:
        for i in range(2):
            procs.append(stack.start([dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                                      "--no-dashboard", "--name", f"w{i}"], home / f"worker{i}.log"))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            stack.stop(proc)


def _check(args, capsys) -> dict:
    assert main(["check", *args, "--json"]) in (0, 3)
    out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(out) == 1, out
    return json.loads(out[0])


def test_dask_cluster_gives_the_local_indicators(isolated, austen, cluster, capsys, monkeypatch):
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT", "false")
    ref = write_jsonl(isolated / "ref.jsonl", [{"id": f"r{i}", "text": p["text"]} for i, p in enumerate(austen[:1500])])
    assert main(["reference", "build", "--input", str(ref), "--dataset", "local"]) == 0
    assert main(["reference", "build", "--input", str(ref), "--dataset", "dask"]) == 0
    batch = isolated / "batch"
    for k in range(4):  # four files: at least four shards to spread
        write_jsonl(batch / f"part-{k}.jsonl", [{"id": f"b{k}-{i}", "text": p["text"], "created_at": "2021-02-03"}
                                                for i, p in enumerate(austen[2000 + 300 * k:2300 + 300 * k])]
                    + (['{"id": "cut", "text": "half a li'] if k == 2 else []))
    capsys.readouterr()
    local = _check(["--input", str(batch), "--dataset", "local"], capsys)
    spread = _check(["--input", str(batch), "--dataset", "dask", "--task-runner", "dask", "--dask-address", cluster],
                    capsys)
    assert spread["batch"] == local["batch"] == {"file": str(batch), "records": 1200, "quarantined": 1}
    keys = [k for k in local["indicators"] if not k.startswith(("corpus.", "schedule."))]
    assert len(keys) > 40
    for k in keys:
        a, b = local["indicators"][k], spread["indicators"][k]
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (k, a, b)

    from distributed import Client

    with Client(cluster, timeout=30) as client:
        ran = client.run(lambda dask_worker: sum("profile_shard" in str(t[0]) for t in dask_worker.state.log))
    assert len(ran) == 2 and all(n > 0 for n in ran.values()), f"shards per worker: {ran}"

    # the filter's shards on the cluster: the same records kept and flagged as locally, byte for byte
    def filtered(dataset: str, *extra: str) -> dict:
        assert main(["filter", "--input", str(batch), "--out", str(isolated / f"filtered-{dataset}"), "--dataset",
                     dataset, "--lm-budget", "0", "--json", *extra]) == 0
        out = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
        assert len(out) == 1, out
        return json.loads(out[0])

    here = filtered("local")
    there = filtered("dask", "--task-runner", "dask", "--dask-address", cluster)
    assert (there["kept"], there["flagged"], there["quarantined"]) == (here["kept"], here["flagged"], 1)
    assert here["kept"] + here["flagged"] == 1200
    for name in ("kept.jsonl", "flagged.jsonl", "quarantine.jsonl"):
        assert (isolated / "filtered-dask" / name).read_bytes() == (isolated / "filtered-local" / name).read_bytes()
    with Client(cluster, timeout=30) as client:
        ran = client.run(lambda dask_worker: sum("filter_shard" in str(t[0]) for t in dask_worker.state.log))
    assert sum(ran.values()) > 0, f"filter shards per worker: {ran}"
