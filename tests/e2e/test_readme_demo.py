"""The README's demo command as a newcomer runs it: the installed console script, in an empty folder,
with no configuration and no server. (CI itself runs the README's install line before the tests.)"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def _clean_env(tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_"))}
    env["HOME"] = str(tmp)  # nothing may land in the real home either
    return env


def test_demo_quick_in_an_empty_folder(isolated):
    readme = (REPO / "README.md").read_text()
    assert "&& .venv/bin/collapse-monitor demo\n" in readme
    script = Path(sys.executable).with_name("collapse-monitor")
    proc = subprocess.run([str(script), "demo", "--quick"], cwd=isolated, env=_clean_env(isolated),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    rows = [ln for ln in out.splitlines() if ln.startswith("batch-")]
    assert len(rows) == 5
    true_share = [float(r.split()[1]) for r in rows]
    estimate = [float(r.split()[2]) for r in rows]
    assert true_share == [0.0, 0.15, 0.4, 0.65, 0.9]
    assert all(abs(t - e) <= 0.1 for t, e in zip(true_share, estimate)), rows
    assert rows[0].rstrip().endswith("-"), "the first, human-only batch must stay green"
    assert "human_share_below_floor" in rows[-1] and "tail_coverage_loss" in rows[-1]
    # The closing commands are spelled as the demo was started (issue 20, item 9) and run as printed.
    prog = rf"(?:collapse-monitor|{re.escape(str(script))})"
    assert re.match(rf"Open the MLflow UI on the results: {prog} ui ", out.rstrip().splitlines()[-1])
    report_cmd = re.search(rf"^Trend report \(HTML with charts\): ({prog} report .*)$", out, re.M).group(1)
    # Quiet (issue 20, item 8): no MLflow registry chatter, nothing pickled.
    assert "Created version" not in proc.stderr and "CloudPickle" not in proc.stderr, proc.stderr[-3000:]

    # Model lineages on long-tail probes: the tail falls in the replace lineage and holds in the accumulate one.
    sections = dict(re.findall(r"^(\w+ lineage '\w+') \(.*?\)\n.*?\n-+\n((?:v\d.*\n)+)", out, re.M))
    assert set(sections) == {f"{k} lineage '{m}'" for k in ("classifier", "generator") for m in ("replace", "accumulate")}
    versions = {name: [ln.split() for ln in rows.splitlines()] for name, rows in sections.items()}
    assert all(len(v) == 3 for v in versions.values())
    replace, accumulate = versions["classifier lineage 'replace'"], versions["classifier lineage 'accumulate'"]
    assert float(replace[-1][4]) < 0.7 * float(replace[0][4]), "replace: the tail accuracy falls"
    assert float(accumulate[-1][4]) > 0.85 * float(accumulate[0][4]), "accumulate: the tail holds"
    assert "probe_tail_collapse (C)" in " ".join(replace[-1]) and "probe_tail_collapse" not in sections["classifier lineage 'accumulate'"]
    gen_replace, gen_acc = versions["generator lineage 'replace'"], versions["generator lineage 'accumulate'"]
    assert float(gen_replace[-1][4]) > 1.3 * float(gen_replace[0][4]), "replace: the tail perplexity rises"
    assert float(gen_acc[-1][4]) < 1.1 * float(gen_acc[0][4])
    assert all("recursive_distillation (W)" in " ".join(v[-1]) for v in versions.values()), "depth 2 at v3"
    # The memorization probe before and after "fine-tuning": the smoothed v1 gives back nothing, the 8-gram v2
    # gives back its training records (not held-out ones) and fires the jump against v1.
    mem = re.search(r"^Memorization before and after fine-tuning .*\n.*\n-+\n(v1 .*)\n(v2 .*)\n", out, re.M)
    assert mem, out[-3000:]
    v1, v2 = mem.group(1).split(), mem.group(2).split()
    assert float(v1[1]) <= 0.1 and mem.group(1).rstrip().endswith("-")
    assert float(v2[1]) >= 0.8 and float(v2[2]) <= 0.1 and "memorization_extraction_jump (C)" in mem.group(2)
    assert re.search(r"\[\s*\d+\.\ds\] batch 5/5", proc.stderr), "progress is shown"
    assert "Traceback" not in proc.stderr

    state = isolated / ".collapse-monitor"
    assert (state / "mlflow.db").is_file() and (state / "prefect").is_dir()
    assert not (isolated / "mlruns").exists() and not (isolated / ".prefect").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    exp = client.get_experiment_by_name("collapse-monitor/demo")
    checks = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'")
    refs = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'reference'")
    assert len(checks) == 5 and len(refs) == 1
    assert str(client.get_model_version_by_alias("collapse-demo-detector", "production").version) == "1"
    probe_exp = client.get_experiment_by_name("collapse-monitor/models/collapse-demo-classifier-replace")
    assert len(client.search_runs([probe_exp.experiment_id], "tags.`collapse.kind` = 'probe'")) == 3
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # the classic view (item 10)
    assert all(r.info.end_time - r.info.start_time > 1000 for r in checks), "a run spans its check"
    last = max(checks, key=lambda r: r.info.start_time)
    assert last.data.tags["collapse.alerts.max_severity"] in ("warning", "critical")
    assert last.data.metrics["synthetic.share"] > 0.7

    import shlex

    shown = subprocess.run([str(script), *shlex.split(report_cmd)[1:]], cwd=isolated, env=_clean_env(isolated),
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert (state / "demo" / "report" / "index.html").is_file() and not (isolated / "demo-report").exists()

    hist = subprocess.run([str(script), "history", "--json", "--last", "3"], cwd=isolated, env=_clean_env(isolated),
                          capture_output=True, text=True, timeout=300)
    assert hist.returncode == 0, hist.stderr
    assert [r["batch"] for r in json.loads(hist.stdout)] == ["batch-04.jsonl", "batch-03.jsonl", "batch-02.jsonl"]

    # A user error inside the flow (a corrupt file) is one clear message and exit 2, not a traceback.
    (isolated / "broken.parquet").write_bytes(b"not a parquet file")
    bad = subprocess.run([str(script), "check", "--input", "broken.parquet", "--dataset", "demo"], cwd=isolated,
                         env=_clean_env(isolated), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "broken.parquet: cannot be read as parquet" in bad.stderr and "Traceback" not in bad.stderr
