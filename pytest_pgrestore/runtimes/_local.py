"""The local runtime: a postgres process on this machine, run as a non-root user.

The postmaster runs under a tiny POSIX-sh supervisor.  When the harness process disappears
(SIGKILL, a crashed runner) the supervisor stops PostgreSQL and removes the run directory, so
nothing of ours outlives the run — unless ``keep`` was written into the run dir.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
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

_SUPERVISOR = """#!/bin/sh
# Supervisor written by pytest-pgrestore: runs postgres; if the harness (pid {harness}) is gone
# and the run was not kept, stop postgres and remove the run directory.
# Paths come as arguments, never as text inside this script: a workdir may hold any character.
run=$1
log=$2
shift 2
"$@" >>"$log" 2>&1 &
pg=$!
echo "$pg" > "$run/postmaster.child"
trap 'kill -INT $pg 2>/dev/null' INT TERM
while kill -0 "$pg" 2>/dev/null; do
  if [ ! -d /proc/{harness} ] && [ ! -f "$run/keep" ]; then
    kill -INT "$pg" 2>/dev/null
    i=0
    while kill -0 "$pg" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pg" 2>/dev/null
    rm -rf "$run"
    exit 0
  fi
  sleep 0.5
done
wait "$pg"
"""

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
        try:
            return int((self.run_dir / "postmaster.child").read_text())
        except (OSError, ValueError):
            return None

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        pid = self.postmaster_pid()
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                return
            if pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("postgres (pid %s) ignored %s", pid, sig.name)
        self.process.kill()
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
            self.process = subprocess.Popen(**self.launch)
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
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
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
        sup = run_dir / "supervisor.sh"
        from ..restore._owner import harness_pid

        sup.write_text(_SUPERVISOR.format(harness=int(harness_pid())))
        sup.chmod(0o755)
        if self.owner:
            os.chown(sup, *self.owner)
        argv = ["/bin/sh", str(sup), str(run_dir), str(log_file), str(self.tools.tool("postgres")), "-D", str(pgdata),
                "-c", f"config_file={config_file}"]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        kwargs: dict[str, Any] = {}
        if self.owner:
            kwargs.update(user=self.owner[0], group=self.owner[1], extra_groups=[])
        launch: dict[str, Any] = dict(args=argv, cwd=run_dir, env=dict(_CLEAN_ENV), start_new_session=True,
                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
        return LocalServer(subprocess.Popen(**launch), run_dir, "127.0.0.1", port, str(socket_dir), pgdata=pgdata,
                           binaries=self.tools, owner=self.owner, log_file=log_file, launch=launch)


def wait_gone(server: LocalServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return True
        time.sleep(0.05)
    return False
