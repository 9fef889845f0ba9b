"""The warm check service (issue 20, item 6): a long-lived process that has already imported everything a check
needs, and forks a child per request that runs the ordinary CLI.

A ``collapse-monitor check`` spends most of its time importing (MLflow, Prefect, NumPy, scikit-learn, Evidently,
GX): about 11 s of a 13 s check against a running Prefect server, against 2-2.5 s of CPU for the check itself in
a warm process. ``collapse-monitor warm`` (or ``serve``, which starts one beside its schedules) imports all of it
once, then listens on ``<state dir>/run/check.sock`` (folder 0700, socket 0600; a peer of another uid is refused,
SO_PEERCRED). For each request it ``fork()``s a child (the daemon never starts a thread nor runs a flow, so the
fork is safe: it checks ``threading.active_count() == 1`` before each), and the child runs
:func:`flows.cli.main` with the client's argv, environment and working directory, on the client's own stdin,
stdout and stderr (passed over the socket, SCM_RIGHTS): the output, ``--json``, progress and exit codes are
those of the in-process CLI. The daemon forwards the client's signals to the child (Ctrl-C, SIGTERM), kills the
child when the client goes away (``kill -9``), reports a crashed child as exit 1, and reaps its children.

The client side (:func:`try_served`) runs in :func:`flows.cli.main` before anything heavy is imported: only for
the commands in :data:`SERVED`, not with ``-v``, ``--no-daemon`` or ``COLLAPSE_MONITOR_NO_DAEMON=1``, and only
when the daemon's
:func:`fingerprint` (the PREFECT_*, MLFLOW_* and COLLAPSE_MONITOR_* variables, the config file's path and bytes,
the state directory, the interpreter and the code's files) equals the client's: Prefect and MLflow read their
settings when imported, so a daemon started under other settings must not run the command. Otherwise, or when
no daemon answers (none, dead, stale socket), the command runs in-process as before, silently (the reason is
printed with ``-v``).

Without a real Prefect server (no ``PREFECT_API_URL``: the ephemeral API), the service runs Prefect's API itself:
the same server a fresh command starts for itself (:mod:`flows.prefect_server`, on the state directory's Prefect
database), started once with the service, stopped with it, and handed to each child as ``PREFECT_API_URL``. A
fresh command's own server costs about 4 s of CPU to boot beside its imports; the service pays it once. If that
server dies, the service stops (its clients then run in-process, as without it).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
from pathlib import Path

NO_DAEMON_ENV = "COLLAPSE_MONITOR_NO_DAEMON"
#: the commands a daemon runs: (command, action) pairs; None: any action
SERVED = {("check", None), ("history", None), ("alerts", "list")}
_ENV_PREFIXES = ("PREFECT_", "MLFLOW_", "COLLAPSE_MONITOR_")
#: variables that do not change what the child imports or reads: the opt-out itself; the config file and state
#: directory are compared resolved (a --config or --state-dir given on the command line counts the same); the
#: schedules, read by `serve` alone (its documented set-up gives them as variables, which a user's shell lacks)
_ENV_IGNORED = {NO_DAEMON_ENV, "COLLAPSE_MONITOR_CONFIG", "COLLAPSE_MONITOR_STATE_DIR"}
_ENV_IGNORED_PREFIXES = ("COLLAPSE_MONITOR_SCHEDULES__",)
_REPO = Path(__file__).resolve().parents[1]
_MAX_REQUEST = 4 << 20
_PR_SET_PDEATHSIG = 1

#: set in a child of the daemon: its main() must not ask the daemon again
in_child = False


def socket_path(state: Path) -> Path:
    return state / "run" / "check.sock"


def _code_stamp() -> str:
    """The code the process runs: every .py file of flows/ and monitors/ with its size and mtime (a change, an
    upgrade or a checkout of another branch makes a running daemon stale)."""
    h = hashlib.sha256()
    for package in ("flows", "monitors"):
        for root, dirs, files in os.walk(_REPO / package):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(settings, config: Path | None, environ=None) -> dict:
    """What must be equal between the daemon and a client for the daemon to run the client's command: the
    settings-bearing variables, the config file (path and content), the state directory, the interpreter and the
    code. ``environ``: the variables as the process was started (before runtime.prepare sets its own)."""
    environ = os.environ if environ is None else environ
    config_digest = None
    if config is not None:
        try:
            config_digest = hashlib.sha256(Path(config).read_bytes()).hexdigest()
        except OSError:
            config_digest = "unreadable"
    return {
        "env": {k: v for k, v in sorted(environ.items())
                if k.startswith(_ENV_PREFIXES) and k not in _ENV_IGNORED and not k.startswith(_ENV_IGNORED_PREFIXES)},
        "config": str(Path(config).resolve()) if config is not None else None,
        "config_sha256": config_digest,
        "state_dir": str(settings.state_path),
        "python": sys.executable,
        "code": _code_stamp(),
    }


def differences(ours: dict, theirs: dict) -> list[str]:
    """Human-readable names of what differs (never the values: a variable may hold a password)."""
    out = []
    for key in sorted(set(ours) | set(theirs)):
        if key == "env":
            a, b = ours.get("env", {}), theirs.get("env", {})
            out += [f"${k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif ours.get(key) != theirs.get(key):
            out.append({"config": "config file", "config_sha256": "config file content", "state_dir": "state directory",
                        "python": "Python interpreter", "code": "collapse-monitor's code"}.get(key, key))
    return out


# ---------------------------------------------------------------- framing


def _send_msg(sock: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        # one sendmsg may take only part of it (a socket with a timeout sends what fits in its buffer): the
        # descriptors ride on the first part, the rest follows
        sent = socket.send_fds(sock, [payload], fds)
        if sent < len(payload):
            sock.sendall(payload[sent:])
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv_msg(sock: socket.socket, maxfds: int = 0) -> tuple[dict, list[int]]:
    """A message and the descriptors that came with it. If it cannot be read whole, the descriptors are closed:
    kept, a client's stdout would stay open here, and whatever reads it (``$(collapse-monitor ...)``, a pipe)
    would wait for the service to end."""
    fds: list[int] = []
    try:
        if maxfds:
            head, fds, _flags, _addr = socket.recv_fds(sock, 4, maxfds)
            if not head:
                raise ConnectionError("connection closed")
            if len(head) < 4:
                head += _recv_exact(sock, 4 - len(head))
        else:
            head = _recv_exact(sock, 4)
        (size,) = struct.unpack("!I", head)
        if size > _MAX_REQUEST:
            raise ConnectionError(f"message of {size} bytes refused")
        return json.loads(_recv_exact(sock, size)), fds
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise


# ---------------------------------------------------------------- client


def decide(args, environ=None) -> tuple[Path | None, str, object]:
    """(the daemon's socket, '', the settings) when this command may go to a daemon, else (None, why not, None).
    Cheap: no heavy import, no connection."""
    environ = os.environ if environ is None else environ
    if in_child:
        return None, "already in the warm service", None
    command = getattr(args, "command", None)
    action = getattr(args, "action", None)
    if (command, None) not in SERVED and (command, action) not in SERVED:
        return None, f"{command} is not served by the warm service", None
    if getattr(args, "no_daemon", False):
        return None, "--no-daemon", None
    if environ.get(NO_DAEMON_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return None, f"{NO_DAEMON_ENV} is set", None
    if getattr(args, "verbose", False):
        return None, "-v: Prefect's log level is fixed when the warm service imports Prefect", None
    from flows.cli.common import settings_for

    try:
        settings = settings_for(args)
    except Exception as exc:  # noqa: BLE001 - the in-process run reports it properly
        return None, f"settings not readable here ({type(exc).__name__})", None
    path = socket_path(settings.state_path)
    if not path.exists():
        return None, f"no warm service ({path} does not exist)", None
    return path, "", settings


def _note(args, message: str) -> None:
    if getattr(args, "verbose", False):
        print(f"collapse-monitor: {message}", file=sys.stderr)


def try_served(args, argv: list[str]) -> int | None:
    """Run the command in the warm service and return its exit code; None: run it in this process."""
    path, why, settings = decide(args)
    if path is None:
        _note(args, f"running in this process: {why}")
        return None
    from monitors.config import config_path

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sent = False
    try:
        sock.settimeout(5)
        sock.connect(str(path))
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _send_msg(sock, {"op": "run", "argv": list(argv), "argv0": sys.argv[0] if sys.argv else "collapse-monitor",
                         "cwd": os.getcwd(), "env": dict(os.environ),
                         "fingerprint": fingerprint(settings, config_path(args.config))}, [0, 1, 2])
        sent = True
        sock.settimeout(120)
        reply, _ = _recv_msg(sock)
    except TimeoutError as exc:
        sock.close()
        if not sent:
            _note(args, f"running in this process: the warm service at {path} did not answer ({exc})")
            return None
        # it has the command and may be running it: running it here too could do it twice
        message = (f"the warm check service at {path} took the command but did not say whether it started it; "
                   f"run it again with --no-daemon (or COLLAPSE_MONITOR_NO_DAEMON=1)")
        print(f"collapse-monitor: error: {message}", file=sys.stderr)
        from flows.cli.common import json_error

        json_error(args, message, 1)
        return 1
    except (OSError, ValueError) as exc:  # none listening (stale socket), closed without starting it
        sock.close()
        _note(args, f"running in this process: the warm service at {path} did not answer ({exc})")
        return None
    if "refused" in reply:
        sock.close()
        _note(args, f"running in this process: the warm service refused: {reply['refused']}")
        return None
    _note(args, f"running in the warm service (pid {reply.get('daemon')}), child {reply.get('child')}")
    return _wait_result(args, sock)


def _wait_result(args, sock: socket.socket) -> int:
    """Forward this process's signals to the child until its exit code arrives."""
    forwarded: list[int] = []

    def forward(signum, _frame):
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    try:
        sock.settimeout(None)
        try:
            result, _ = _recv_msg(sock)
        except (OSError, ValueError) as exc:
            result = {"exit": 1, "message": f"the warm check service went away ({exc})"}
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()
    code, killed_by = int(result.get("exit", 1)), result.get("signal")
    if killed_by and killed_by in forwarded:  # as the in-process command would have died of it
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    if result.get("message"):
        print(f"collapse-monitor: error: {result['message']}", file=sys.stderr)
        from flows.cli.common import json_error

        json_error(args, result["message"], code)
    return code


# ---------------------------------------------------------------- daemon


def _warm_imports() -> None:
    """Everything a check (and history, alerts list) imports, so that a child imports nothing heavy."""
    import mlflow  # noqa: F401
    import prefect  # noqa: F401
    from prefect.client.orchestration import get_client  # noqa: F401

    import flows.batches  # noqa: F401
    import flows.check  # noqa: F401
    import flows.progress  # noqa: F401
    import flows.synthetic_share  # noqa: F401
    import flows.tasks  # noqa: F401
    from flows.cli import common  # noqa: F401
    from monitors.adapters import drift, gx_records, gx_rules, ingest, registry, sources, tracking  # noqa: F401

    drift.import_evidently()
    gx_records.import_gx()
    for name in _EXTRA_MODULES:
        with contextlib.suppress(Exception):
            __import__(name)
    with contextlib.suppress(Exception):
        _warm_plotly()
    import pkgutil

    for package in _WHOLE_PACKAGES:  # many small modules, loaded one by one as a report needs them
        with contextlib.suppress(Exception):
            for info in pkgutil.iter_modules(__import__(package, fromlist=["_"]).__path__, package + "."):
                with contextlib.suppress(Exception):
                    __import__(info.name)


#: modules a check imports lazily inside functions (the difference between a check's sys.modules and the above)
_EXTRA_MODULES = (
    "monitors.adapters.lmscore", "monitors.adapters.locks", "monitors.adapters.ledger", "monitors.adapters.spool",
    "monitors.adapters.failures", "monitors.adapters.delivery", "monitors.core.reference", "monitors.core.bands",
    "monitors.core.embedding", "monitors.core.mixture", "monitors.core.quantify", "monitors.core.neardup",
    "flows.oncall", "flows.cli.render", "flows.check_worker", "flows.prefect_server", "scipy.stats",
    "sklearn.linear_model", "sklearn.decomposition", "mlflow.tracking", "mlflow.sklearn", "mlflow.utils.model_utils",
    "mlflow.utils.search_logged_model_utils", "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.tracking.sqlalchemy_workspace_store", "mlflow.store.model_registry.sqlalchemy_store",
    "alembic.command", "alembic.config", "prefect.task_runners", "prefect.flow_engine", "prefect.task_engine",
    "prefect.artifacts", "prefect.states", "prefect.utilities.visualization", "graphviz", "anyio._backends._asyncio",
    "multiprocessing.popen_spawn_posix", "narwhals._pandas_like", "great_expectations.render.renderer.site_builder",
    "jinja2.ext", "plotly.offline", "plotly.tools", "tzdata",
)


_WHOLE_PACKAGES = ("plotly.validators.layout", "plotly.graph_objs.layout", "plotly.validators.scatter",
                   "plotly.validators.bar", "narwhals._pandas_like")


def _warm_plotly() -> None:
    """Plotly loads its figure classes and validators on first use (about 200 modules for Evidently's report)."""
    import plotly.graph_objects as go

    go.Figure([go.Scatter(x=[0], y=[0], line={}, marker={}), go.Bar(x=[0], y=[0], marker={})],
              layout={"title": {"text": ""}, "xaxis": {"title": {"text": ""}}, "yaxis": {"title": {"text": ""}},
                      "legend": {}, "margin": {}, "font": {}, "hoverlabel": {}, "updatemenus": [{}]}).to_dict()


def _set_pdeathsig() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end, from the kernel (SO_PEERCRED), not from what it says."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


class Daemon:
    """``child_env``: variables each child gets over its client's (the URL of the Prefect API the service runs);
    ``failed()``: why the service cannot serve any more (that API died), or None; asked once a second."""

    def __init__(self, path: Path, fp: dict, parent: int | None = None, log=None, child_env: dict | None = None,
                 failed=None) -> None:
        self.path, self.fp, self.parent = path, fp, parent
        self.child_env, self.failed = dict(child_env or {}), failed
        self.log = log or (lambda msg: print(f"collapse-monitor warm: {msg}", file=sys.stderr, flush=True))
        self.pid = os.getpid()
        self.children: dict[int, socket.socket] = {}  # child pid -> its client's connection
        self.by_conn: dict[int, int] = {}  # connection fd -> child pid
        self.stopping = False

    # -- socket

    def bind(self) -> socket.socket:
        """Create ``run/`` (0700) and the socket (0600); replace a stale socket, refuse a live daemon's."""
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
        if st.st_uid != os.getuid():
            raise PermissionError(f"{folder} belongs to uid {st.st_uid}, not to this user")
        os.chmod(folder, 0o700)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise FileExistsError(f"{self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2)
            try:
                probe.connect(str(self.path))
            except OSError:  # nobody listens: a daemon that died left it
                self.log(f"replacing the stale socket {self.path} (its daemon is gone)")
                self.path.unlink()
            else:
                raise FileExistsError(f"a warm service already listens on {self.path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(16)
        self.inode = self.path.stat().st_ino
        return listener

    def unlink(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:  # ours, not a later daemon's
                self.path.unlink()

    # -- main loop

    def serve_forever(self, ready=None) -> None:
        if threading.active_count() != 1:
            raise RuntimeError(f"the warm service must not run threads before it forks: {threading.enumerate()}")
        listener = self.bind()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_stop)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the wakeup fd
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, "listen")
        sel.register(wake_r, selectors.EVENT_READ, "wake")
        self.sel, self.listener, self.wake = sel, listener, (wake_r, wake_w)
        self.log(f"ready: pid {self.pid}, listening on {self.path}")
        if ready:
            ready()
        try:
            deadline = None
            while True:
                if self.stopping:
                    if deadline is None:
                        deadline = time.monotonic() + 10
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(listener)
                        listener.close()
                        self.unlink()
                        for child in self.children:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(child, signal.SIGTERM)
                    if not self.children:
                        break
                    if time.monotonic() > deadline:
                        for child in self.children:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(child, signal.SIGKILL)
                if self.parent and os.getppid() != self.parent:
                    self.log("the serve process that started it is gone: stopping")
                    self.stopping = True
                why = None if self.stopping or self.failed is None else self.failed()
                if why:
                    self.log(f"{why}: stopping (commands run in-process until it is started again)")
                    self.stopping = True
                for key, _ in sel.select(timeout=1.0):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass
                    else:
                        self._client_event(key.fileobj)
                self._reap()
        finally:
            if os.getpid() == self.pid:
                signal.set_wakeup_fd(-1)
                self.unlink()
                self.log("stopped")

    def _on_stop(self, signum, _frame) -> None:
        self.stopping = True

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            peer_pid, uid = _peer(conn)
            if uid != os.getuid():
                self.log("refused a connection from another user")
                conn.close()
                return
            conn.settimeout(5)
            request, fds = _recv_msg(conn, maxfds=3)
        except (OSError, ValueError) as exc:
            self.log(f"dropped a request: {exc}")
            conn.close()
            return
        try:
            refusal = self._refusal(request, fds)
            if refusal:
                self.log(f"refused a request of pid {peer_pid}: {refusal}")
                _send_msg(conn, {"refused": refusal})
                conn.close()
                return
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            child = os.fork()
            if child == 0:
                self._child(request, fds, conn)  # never returns
            self.children[child] = conn
            self.by_conn[conn.fileno()] = child
            self.log(f"child {child} runs `{_command(request['argv'])}` for pid {peer_pid}")
            try:
                conn.settimeout(2)
                _send_msg(conn, {"daemon": self.pid, "child": child})
                conn.settimeout(None)
                self.sel.register(conn, selectors.EVENT_READ, "client")
            except OSError:  # the client is gone already: so is its command, as in-process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        except OSError as exc:
            self.log(f"could not start a request: {exc}")
            conn.close()
        finally:
            for fd in fds:
                os.close(fd)

    def _refusal(self, request: dict, fds: list[int]) -> str | None:
        if self.stopping:
            return "stopping"
        if request.get("op") != "run" or len(fds) != 3:
            return "malformed request"
        if request.get("fingerprint") != self.fp:
            what = differences(self.fp, request.get("fingerprint") or {})
            return "it was started with other settings (" + ", ".join(what[:8]) + ")"
        if threading.active_count() != 1:  # never fork a process with threads
            return "it runs threads"
        return None

    def _client_event(self, conn: socket.socket) -> None:
        child = self.by_conn.get(conn.fileno())
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if child is None:
            return
        if not data:  # the client is gone (killed): its command goes with it, as in-process
            self.sel.unregister(conn)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            return
        for line in data.splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                signum = int(json.loads(line)["signal"])
                if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signum)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.by_conn.pop(conn.fileno(), None)
            if os.WIFEXITED(status):
                result = {"exit": os.WEXITSTATUS(status)}
                self.log(f"child {pid} exited {result['exit']}")
            else:
                sig = os.WTERMSIG(status)
                result = {"exit": 1, "signal": sig,
                          "message": f"the check process (pid {pid}) in the warm service died of signal "
                                     f"{signal.Signals(sig).name}"}
                self.log(f"child {pid} died of signal {signal.Signals(sig).name}")
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn)
            with contextlib.suppress(OSError):
                conn.settimeout(2)
                _send_msg(conn, result)
            conn.close()

    # -- the child

    def _child(self, request: dict, fds: list[int], conn: socket.socket) -> None:
        code = 1
        try:
            global in_child
            in_child = True
            _set_pdeathsig()
            if os.getppid() != self.pid:
                os._exit(1)
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
                signal.signal(s, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.sel.close()
            self.listener.close()
            for fd in self.wake:
                os.close(fd)
            conn.close()
            for other in self.children.values():
                other.close()
            os.setsid()  # not in the daemon's terminal's process group: only the client's signals reach it
            for i, fd in enumerate(fds):
                os.dup2(fd, i)
                os.close(fd)
            fds.clear()
            _fresh_stdio()
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            os.environ.update(self.child_env)
            sys.argv = [request.get("argv0") or "collapse-monitor", *request["argv"]]
            from flows.cli import main

            try:
                code = main(request["argv"])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            from flows.cli.common import exit_process

            exit_process(code)  # as the interpreter ends: threads finish, exit handlers run; never returns
        except BaseException:  # setting the child up failed: say so where its client (or the daemon's log) reads
            with contextlib.suppress(BaseException):
                import traceback

                print("collapse-monitor: the warm service could not start the command:", file=sys.stderr)
                traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
            with contextlib.suppress(BaseException):
                sys.stderr.flush()
            os._exit(code & 0xFF if isinstance(code, int) else 1)


def _command(argv: list[str]) -> str:
    """The command's words without option values (a path or a name may be private): 'check', 'alerts list'."""
    served = {c for c, _ in SERVED}
    command = next((a for a in argv if a in served), "?")
    return f"{command} {' '.join(a for c, a in SERVED if c == command and a)}".strip()


def _fresh_stdio() -> None:
    """sys.stdin/stdout/stderr on the client's descriptors (now 0, 1, 2), buffered as Python would for them."""
    import io

    enc = getattr(sys.stdout, "encoding", None) or "utf-8"

    def text(fd: int, mode: str, **kw) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=enc, **kw)

    sys.stdin = sys.__stdin__ = text(0, "r")
    sys.stdout = sys.__stdout__ = text(1, "w", line_buffering=os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, "w", errors="backslashreplace", line_buffering=True)


def run_daemon(settings, config: Path | None, environ: dict, parent: int | None = None) -> int:
    """Import everything, then serve until SIGTERM / Ctrl-C. ``environ``: the variables as this process was
    started, which clients are compared with. Without a real Prefect server, run Prefect's API for the children
    (see the module docstring): it boots while this process imports."""
    fp = fingerprint(settings, config, environ)
    path = socket_path(settings.state_path)
    if parent:
        _set_pdeathsig()
    started = time.perf_counter()
    api = _HostedApi.start() if not settings.prefect_api() else None
    try:
        _warm_imports()
        if api is not None:
            api.ready()
        daemon = Daemon(path, fp, parent=parent, child_env=api.child_env() if api else None,
                        failed=api.failed if api else None)
        daemon.log(f"imported everything a check needs in {time.perf_counter() - started:.1f} s"
                   + (f"; Prefect's API for the commands it runs: {api.url} (pid {api.pid})" if api else ""))
        daemon.serve_forever()
    finally:
        if api is not None and os.getpid() == api.owner:
            api.stop()
    return 0


class _HostedApi:
    """Prefect's API server run by the service for the ephemeral case (:mod:`flows.prefect_server`'s server,
    kept for the service's life instead of one command's)."""

    def __init__(self, server) -> None:
        self.server, self.owner = server, os.getpid()
        self.url, self.pid = server.api_url, server.process.pid

    @classmethod
    def start(cls) -> _HostedApi | None:
        from flows import prefect_server

        server = prefect_server.start()
        if server is None:  # Prefect already imported here (a test's process): it would not see the URL
            return None
        server.detach()  # the children find its URL in their environment (child_env), not through start()
        return cls(server)

    def ready(self) -> None:
        self.server.ready()

    def child_env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.url}

    def failed(self) -> str | None:
        proc = self.server.process
        if proc is None or proc.poll() is not None:
            return f"the Prefect API it runs ({self.url}) exited"
        return None

    def stop(self) -> None:
        self.server.close()
