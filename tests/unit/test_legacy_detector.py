"""A detector registered before monitors/ was split (its skops file names monitors.detector.Stylometry) still loads."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

SAVE = """
import sys, skops.io
from monitors.core import detector
from monitors.core.detector import Stylometry
Stylometry.__module__ = "monitors.detector"   # what a detector trained before the split recorded
sys.modules["monitors.detector"] = detector
model = Stylometry()
data = skops.io.dumps(model)
open(sys.argv[1], "wb").write(data)
print(skops.io.get_untrusted_types(data=data))
"""

LOAD = """
import sys, skops.io
from monitors.adapters import registry
if sys.argv[2] == "alias":
    registry.alias_legacy_modules()
types = ["monitors.detector.Stylometry"]
obj = skops.io.loads(open(sys.argv[1], "rb").read(), trusted=types)
print(type(obj).__module__, type(obj).__name__)
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)


def test_old_detector_files_load_through_the_alias(tmp_path):
    path = tmp_path / "old.skops"
    saved = _run(SAVE, str(path))
    assert "monitors.detector.Stylometry" in saved.stdout, saved.stderr
    without = _run(LOAD, str(path), "plain")
    assert without.returncode != 0 and "monitors.detector" in without.stderr  # the alias is what makes it load
    loaded = _run(LOAD, str(path), "alias")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["monitors.core.detector", "Stylometry"]
