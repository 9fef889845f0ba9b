"""The trend report in a real browser: headless Chromium driven through ChromeDriver (the W3C WebDriver
protocol over HTTP on 127.0.0.1). Debian's `chromium` and `chromium-driver` are installed when missing.

Checks are run on batches whose file name and texts carry markup; the report must load without console
errors, show its charts, run none of that markup, and be logged to MLflow. The screenshot's path is printed.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.cli import main
from tests import stack
from tests.conftest import write_jsonl

pytestmark = pytest.mark.e2e

HOSTILE_NAME = "b<img src=x onerror=document.body.setAttribute('data-pwned',1)>.jsonl"
HOSTILE_TEXT = "<script>document.body.setAttribute('data-pwned', 2)</script> and then some ordinary words"


def _ensure_chromium() -> tuple[str, str]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, capture_output=True, timeout=600, env=env)
        done = subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
                              capture_output=True, text=True, timeout=1200, env=env)
        assert done.returncode == 0, f"could not install chromium: {done.stderr[-2000:]}"
    return shutil.which("chromium"), shutil.which("chromedriver")


class WebDriver:
    def __init__(self, url: str):
        self.url = url
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tempfile.mkdtemp(prefix='cm-chromium-')}", "--window-size=1280,2000"]}}}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(self.url + path, method=method, data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())["value"]

    def do(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def close(self):
        self._call("DELETE", f"/session/{self.session}")


def test_report_renders_in_chromium_without_running_data(isolated, austen, capsys, monkeypatch):
    _, chromedriver = _ensure_chromium()
    monkeypatch.setenv("COLLAPSE_MONITOR_INDICATORS__DRIFT", "false")
    ref = write_jsonl(isolated / "ref.jsonl", [{"id": f"r{i}", "text": p["text"]} for i, p in enumerate(austen[:800])])
    assert main(["reference", "build", "--input", str(ref), "--dataset", "web"]) == 0
    for k, name in enumerate(["a.jsonl", HOSTILE_NAME, "c.jsonl"]):
        rows = [{"id": f"{k}-{i}", "text": p["text"]} for i, p in enumerate(austen[1000 + 200 * k:1150 + 200 * k])]
        rows.append({"id": f"{k}-x", "text": HOSTILE_TEXT})
        assert main(["check", "--input", str(write_jsonl(isolated / name, rows)), "--dataset", "web"]) in (0, 3)
    capsys.readouterr()
    assert main(["report", "--dataset", "web", "--out", str(isolated / "report")]) == 0
    assert "report of 3 checks of dataset 'web'" in capsys.readouterr().out
    page = isolated / "report" / "index.html"
    assert "&lt;img src=x onerror" in page.read_text()

    port = stack.free_port()
    driver_proc = stack.start([chromedriver, f"--port={port}"], isolated / "chromedriver.log")
    try:
        stack.wait_http(f"http://127.0.0.1:{port}/status", 60, driver_proc, isolated / "chromedriver.log")
        browser = WebDriver(f"http://127.0.0.1:{port}")
        try:
            browser.do("POST", "/url", {"url": page.as_uri()})
            time.sleep(0.5)
            state = browser.do("POST", "/execute/sync", {"script": """
                const imgs = Array.from(document.querySelectorAll('#charts img'));
                return {title: document.title, pwned: document.body.getAttribute('data-pwned'),
                        charts: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 600).length,
                        probes: document.querySelectorAll('#probe-charts img').length,
                        rows: document.querySelectorAll('#runs tr').length,
                        hostile: Array.from(document.querySelectorAll('#runs a')).map(a => a.textContent)};""", "args": []})
            logs = browser.do("POST", "/se/log", {"type": "browser"})
            shot = base64.b64decode(browser.do("GET", "/screenshot"))
        finally:
            browser.close()
    finally:
        stack.stop(driver_proc)
    assert state["title"] == "collapse-monitor report: web"
    assert state["pwned"] is None, "markup from the data ran in the report"
    assert state["charts"] >= 10 and state["loaded"] == state["charts"], state
    assert state["rows"] == 4 and HOSTILE_NAME in state["hostile"], state["hostile"]
    errors = [entry for entry in logs if entry.get("level") == "SEVERE"]
    assert not errors, errors
    shot_path = isolated / "report" / "screenshot.png"
    shot_path.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    with capsys.disabled():  # in the CI log too
        print(f"\nscreenshot of the report: {shot_path}")

    client = MlflowClient(f"sqlite:///{isolated}/.collapse-monitor/mlflow.db")
    exp = client.get_experiment_by_name("collapse-monitor/web")
    (run,) = client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'report'")
    names = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/index.html", "report/charts"} <= names
    assert Path(client.download_artifacts(run.info.run_id, "report/index.html", str(isolated))).read_text().startswith("<!DOCTYPE")
    # The layout a reviewer meets in the MLflow UI: run names, one-line descriptions, steps = sequence numbers.
    checks = sorted(client.search_runs([exp.experiment_id], "tags.`collapse.kind` = 'check'"),
                    key=lambda r: int(r.data.tags["collapse.sequence"]))
    assert [r.info.run_name for r in checks] == ["check web a.jsonl", f"check web {HOSTILE_NAME}", "check web c.jsonl"]
    for seq, r in enumerate(checks):
        note = r.data.tags["mlflow.note.content"]
        assert "\n" not in note and "alert(s) firing" in note
        assert client.get_metric_history(r.info.run_id, "tail.distinct_2")[0].step == seq
        assert {"collapse.dataset", "collapse.batch", "collapse.alerts.max_severity"} <= set(r.data.tags)
