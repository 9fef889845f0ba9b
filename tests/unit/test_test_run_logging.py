"""A test run ends without '--- Logging error --- ValueError: I/O operation on closed file' (issue 20, item 8).

Prefect's console handler binds to the ``sys.stderr`` of the moment logging is set up (the first flow run, or the CLI),
which under pytest is a capture stream that pytest closes: a test capturing output, or the end of the session,
left the handler writing to a closed file (Prefect's server logs while it stops at exit).
"""

import subprocess
import sys

from tests.conftest import REPO

INNER = '''
import atexit
import logging


def test_prefect_set_up_while_output_is_captured(capsys):
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # what the first flow run, or the CLI, does: the console handler is made now

    logging.getLogger("prefect.inner").warning("during the first test")


def test_a_later_test_logs():
    logging.getLogger("prefect.inner").warning("in a later test")
    atexit.register(logging.getLogger("prefect.inner").warning, "at exit, after pytest closed its streams")
'''


def test_prefect_console_logging_survives_pytest_capture(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           str(tmp_path / "test_inner.py")], cwd=REPO, capture_output=True, text=True, timeout=300)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Logging error" not in said and "closed file" not in said, said
    assert "at exit, after pytest closed its streams" in said
