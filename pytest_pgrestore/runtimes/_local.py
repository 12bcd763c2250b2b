"""The local runtime: a postgres process on this machine, run as a non-root user.

The postmaster runs under the supervisor of :mod:`._supervise`, which runs as the harness's user
(root in CI: the server user can neither signal nor mislead it) and holds the postmaster and
everything it starts in a PID namespace of its own (a child subreaper where namespaces are
refused).  The harness signals only the supervisor, never a pid read from a file.  When the
harness process disappears (SIGKILL, a crashed runner) the supervisor stops PostgreSQL, ends every
process the copy started and removes the run directory — unless the harness wrote ``keep``.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._base import RecoveryProber, Runtime
from ._binaries import PgBinaries, find_binaries
from ._probe import Prober

log = logging.getLogger(__name__)

__all__ = ["LocalRuntime", "LocalServer", "server_owner"]

#: the supervisor, run as a script by the harness's own interpreter (see :mod:`._supervise`)
SUPERVISOR = Path(__file__).with_name("_supervise.py")
#: False: the supervisor does without namespaces (its subreaper fallback), as where they are refused
NAMESPACES = True
#: the harness → supervisor signals: fast shutdown, immediate shutdown, SIGKILL of the postmaster
_STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)

_CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "TZ": "UTC"}


def server_owner(user: str = "postgres") -> tuple[int, int] | None:
    """(uid, gid) the server must run as: ``user`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        from ..errors import PgRestoreError

        raise PgRestoreError(f"we run as root and there is no {user!r} OS user to run PostgreSQL as",
                             checked=f"getpwnam({user!r})",
                             fix=f"create it (useradd --system {user}) or run as a non-root user") from None
    return pw.pw_uid, pw.pw_gid


@dataclass
class LocalServer:
    process: subprocess.Popen
    run_dir: Path
    host: str
    port: int
    socket_dir: str | None
    pgdata: Path | None = None
    binaries: PgBinaries | None = None
    owner: tuple[int, int] | None = None
    log_file: Path | None = None
    launch: dict[str, Any] | None = field(default=None, repr=False)  # the Popen arguments, to start it again

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid, found from the supervisor down through ``/proc`` (nothing the
        server wrote): the first process of the server user below the supervisor."""
        return find_postmaster(self.process.pid, self.owner[0] if self.owner else os.geteuid())

    def containment(self, *, wait: float = 5.0) -> str:
        """How the copy's processes are held: pid-namespace, user-pid-namespace or subreaper (the
        supervisor writes it in the first moments after its start)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                mode = (self.run_dir / "containment").read_text().strip()
            except OSError:
                mode = ""
            if mode or time.monotonic() > deadline or self.process.poll() is not None:
                return mode or "unknown"
            time.sleep(0.02)

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown, then immediate, then SIGKILL — asked of the supervisor, which ends every
        process the copy started before it exits.  Returns once the supervisor is gone."""
        for sig, wait in zip(_STOP_SIGNALS, (timeout, 5.0, 5.0), strict=True):
            if self.process.poll() is not None:
                return
            try:
                os.kill(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("the supervisor of %s (pid %s) did not end after %s", self.run_dir, self.process.pid,
                            sig.name)
        self.process.kill()  # its namespace's process 1 goes with it (PR_SET_PDEATHSIG), and all in it
        self.process.wait(5)

    @contextmanager
    def offline(self, *, timeout: float = 60.0) -> Iterator[LocalServer]:
        """Stop the server cleanly, yield while the cluster is down, then start it again with the
        same command line: same port and socket, so every connect string handed out stays valid.

        For tools that need a cleanly stopped cluster (``pg_checksums --check``).
        """
        if self.launch is None:
            raise RuntimeError("this server was not started by LocalRuntime: it cannot be restarted")
        self.stop(timeout=timeout)
        try:
            yield self
        finally:
            self.process = _spawn(self.launch, self.run_dir)
            self._wait_ready(timeout)

    def recovery_prober(self) -> RecoveryProber:
        """One kept connection over the run dir's socket (see :class:`~._probe.Prober`)."""
        assert self.socket_dir is not None, "a local server always has its socket in reach"
        return Prober(Path(self.socket_dir), self.port)

    def sync_log(self) -> None:
        """Nothing to do: the server writes the run dir's log file itself."""

    def run_tool(self, name: str, args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
        """A PostgreSQL utility of the server's version, run as the server user."""
        assert self.binaries is not None, "LocalRuntime.start gives its server the binaries"
        kwargs: dict[str, Any] = {}
        if self.owner:
            kwargs.update(user=self.owner[0], group=self.owner[1], extra_groups=[])
        return subprocess.run([str(self.binaries.tool(name)), *args], capture_output=True, text=True,
                              env=dict(_CLEAN_ENV), cwd=self.run_dir, timeout=timeout, **kwargs)

    def _wait_ready(self, timeout: float) -> None:
        """Until postmaster.pid says "ready" (what pg_ctl -w waits for), or the server exits."""
        from ..errors import PgRestoreError

        assert self.pgdata is not None, "a restartable server (offline checks launch) knows its PGDATA"
        deadline = time.monotonic() + timeout
        pidfile = self.pgdata / "postmaster.pid"
        while self.process.poll() is None and time.monotonic() < deadline:
            try:  # PGDATA is the server user's: never through a link it planted
                fd = os.open(pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd) as f:
                    lines = f.read(4096).splitlines()
            except (OSError, UnicodeDecodeError):
                lines = []
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
            time.sleep(0.05)
        tail = self.log_file.read_text(errors="replace").splitlines()[-8:] if self.log_file else []
        state = "exited" if self.process.poll() is not None else f"not ready after {timeout:.0f} s"
        raise PgRestoreError(f"the restored server did not come back after a clean stop: {state}",
                             checked=f"{pidfile} status line; server log: " + " | ".join(tail),
                             fix="read the server log in the run directory (--restore-keep=on-failure keeps it)")


class LocalRuntime(Runtime):
    """A postgres process on this machine, as the server user (``postgres`` when we are root)."""

    name = "local"

    def __init__(self, settings, *, evidence: dict | None = None) -> None:
        super().__init__(settings, evidence=evidence)
        self._owner = server_owner()
        self.tools: PgBinaries | None = None
        self._server: LocalServer | None = None

    def describe(self) -> str | None:
        """Once started: how the copy is contained, and who runs what."""
        if self._server is None:
            return None
        who = (f"server as uid {self.owner[0]}, supervisor as uid {os.geteuid()}" if self.owner
               else f"server and supervisor as uid {os.geteuid()} (no privilege boundary)")
        return f"local; containment: {self._server.containment()}; {who}"

    @property
    def owner(self) -> tuple[int, int] | None:
        return self._owner

    def binaries(self, major: int | None) -> PgBinaries:
        s = self.settings
        self.tools = find_binaries(major, explicit=s.pg_bin, server_uid=self.owner[0] if self.owner else None,
                                   cache_dir=s.workdir / "bin")
        return self.tools

    def attach(self, run, *, port: int | None) -> None:
        """The run dir's files go to the server user (a run dir made before the choice has none)."""
        super().attach(run, port=port)
        run.owner = self.owner

    def start(self, *, config_file: Path, settings: dict[str, str], socket_dir: Path, spool=None,
              extra_wal: dict[str, str] | None = None, kept: dict[str, str] | None = None) -> LocalServer:
        """The spool's files are read where they are: ``spool``, ``extra_wal`` and ``kept`` need
        nothing here."""
        run, port = self.attached(), self.listen_port()
        if self.tools is None:
            raise RuntimeError("LocalRuntime.binaries() comes before start()")
        run_dir, pgdata, log_file = run.path, run.pgdata, run.log_file
        from ..restore._owner import harness_pid
        from ..restore._sweep import linked_socket_dir
        from ._host import process_start

        harness = harness_pid()
        argv = [sys.executable, "-I", "-S", str(SUPERVISOR), "--harness", str(harness),
                "--harness-start", process_start(harness) or "", "--run", str(run_dir)]
        if not NAMESPACES:
            argv.append("--no-namespace")
        linked = linked_socket_dir(run_dir)
        if linked is not None:
            argv += ["--sockdir", str(linked)]
        if self.owner:
            argv += ["--uid", str(self.owner[0]), "--gid", str(self.owner[1])]
        argv += ["--", str(self.tools.tool("postgres")), "-D", str(pgdata), "-c", f"config_file={config_file}"]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        launch: dict[str, Any] = dict(args=argv, cwd=run_dir, env=dict(_CLEAN_ENV), start_new_session=True,
                                      stdin=subprocess.DEVNULL, log_file=log_file)
        server = LocalServer(_spawn(launch, run_dir), run_dir, "127.0.0.1", port, str(socket_dir), pgdata=pgdata,
                             binaries=self.tools, owner=self.owner, log_file=log_file, launch=launch)
        self._server = server
        return server


def _spawn(launch: dict[str, Any], run_dir: Path) -> subprocess.Popen:
    """Start the supervisor with the server log as its output (the harness opens it: the server
    user writes it only through that descriptor), and note its pid for a person stopping a kept
    run by hand."""
    from ..restore._rundir import write_private

    kwargs = dict(launch)
    log_path = kwargs.pop("log_file")
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        process = subprocess.Popen(**kwargs, stdout=fd, stderr=fd)
    finally:
        os.close(fd)
    write_private(run_dir / "supervisor.pid", f"{process.pid}\n", mode=0o644)
    return process


def find_postmaster(supervisor: int, server_uid: int) -> int | None:
    """The first process of ``server_uid`` below ``supervisor`` (breadth first, through
    ``/proc/<pid>/task/<tid>/children``): the postmaster, whose children come after it."""
    from ._supervise import children

    todo = [supervisor]
    while todo:
        level = [kid for pid in todo for kid in children(pid)]
        for pid in level:
            try:
                if os.stat(f"/proc/{pid}").st_uid == server_uid and pid != supervisor \
                        and Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                    return pid
            except OSError:
                continue
        todo = level
    return None


def wait_gone(server: LocalServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return True
        time.sleep(0.05)
    return False
