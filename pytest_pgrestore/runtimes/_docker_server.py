"""A restored server in a container: the Server protocol, probes, passwords, an offline window.

Bind transfer shares the run dir, so probes and admin connections use the unix socket as for a
local server.  Copy transfer cannot reach the container's socket: probes run ``psql`` inside the
container, and per-run passwords are set there as SCRAM secrets computed here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PgRestoreError
from ..restore._instance import RestoredInstance
from ._base import RecoveryProber
from ._container import ExecResult, PgContainer
from ._docker_image import ImageTools
from ._probe import Probe, Prober

__all__ = ["DockerServer", "ContainerInstance", "scram_verifier"]


@dataclass
class DockerServer:
    """The Server protocol for a container; ``probe`` and ``sync_log`` are used by recover.watch."""

    container: PgContainer
    run_dir: Path
    host: str
    port: int
    socket_dir: str | None  # None in copy mode: the socket lives inside the container only
    log_file: Path
    container_socket_dir: str
    evidence: dict = field(default_factory=dict)
    binaries: ImageTools | None = None
    admin_user: str = "postgres"
    pgdata: Path | None = None

    @property
    def name(self) -> str:
        return self.container.name

    def poll(self) -> int | None:
        return self.container.poll()

    def sync_log(self) -> None:
        text = self.container.logs()
        if text:
            self.log_file.write_text(text)

    def recovery_prober(self) -> RecoveryProber:
        """Bind mode asks through the shared socket over one kept connection, copy mode through
        psql inside the container."""
        if self.socket_dir is not None:
            return Prober(Path(self.socket_dir), self.port)
        return _PsqlProber(self)

    def probe(self, user: str) -> Probe | None:
        """Where recovery is, asked once."""
        prober = self.recovery_prober()
        try:
            return prober(user)
        finally:
            prober.close()

    def _psql_probe(self, user: str) -> Probe | None:
        sql = ("select pg_is_in_recovery(), case when pg_is_in_recovery() then pg_get_wal_replay_pause_state() end, "
               "pg_last_wal_replay_lsn(), extract(epoch from pg_last_xact_replay_timestamp())")
        out = self.psql(user, sql)
        if out.returncode != 0:
            if re.search(r'role "[^"]+" does not exist', out.stderr):
                raise PgRestoreError(f"the restored cluster has no role {user!r}",
                                     checked="connecting to the restored server as --restore-user",
                                     fix="set --restore-user (env PGRESTORE_USER) to a role that exists in the backup")
            return None
        from ..settings._target import parse_lsn

        fields = (out.stdout.strip().splitlines() or [""])[-1].split("|")
        if len(fields) != 4:  # psql said nothing this time (seen under load): asked again next tick
            return None
        in_recovery, pause, lsn, ts = fields
        return Probe(promoted=in_recovery != "t", paused=pause == "paused",
                     replay_lsn=parse_lsn(lsn) if lsn else None,
                     last_replay_time=datetime.fromtimestamp(float(ts), timezone.utc) if ts else None)

    def psql(self, user: str, sql: str, dbname: str = "template1"):
        import docker.errors

        try:
            return self._psql(user, sql, dbname)
        except docker.errors.APIError as exc:  # the container stopped: poll() reports how
            return ExecResult(255, "", exc.explanation or str(exc))

    def _psql(self, user: str, sql: str, dbname: str):
        return self.container.exec(["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-F", "|",
                                    "-h", self.container_socket_dir, "-p", str(self.port), "-U", user,
                                    "-d", dbname, "-c", sql])

    def set_password(self, role: str, password: str, admin: str) -> None:
        """ALTER ROLE with a SCRAM verifier computed here: the password never enters the container."""
        verifier = scram_verifier(password)
        ident = '"' + role.replace('"', '""') + '"'
        out = self.psql(admin, f"ALTER ROLE {ident} WITH LOGIN PASSWORD '{verifier}'")
        if out.returncode != 0:
            raise PgRestoreError(f"could not set the per-run password of {role!r}: {out.stderr.strip()}",
                                 checked="ALTER ROLE through psql inside the container",
                                 fix="the role must exist in the restored cluster")

    def keep(self) -> None:
        self.container.keep()


    @contextmanager
    def offline(self, *, timeout: float = 60.0) -> Iterator[DockerServer]:
        """Stop postgres cleanly inside the running container, yield, start it again (same port,
        same socket): for tools that need a stopped cluster, run with :meth:`run_tool`."""
        run, pgc = str(self.run_dir), self.container
        pgc.exec(["sh", "-c", ': > "$1/offline"', "sh", run])
        pgc.container.kill(signal="SIGINT")
        self._wait_for(lambda: pgc.exec(["test", "-e", f"{run}/offline.down"]).returncode == 0, timeout,
                       "postgres to stop for the offline check")
        try:
            yield self
        finally:
            pgc.exec(["rm", "-f", f"{run}/offline"])
            self._wait_for(lambda: (self.probe(self.admin_user) or None) is not None, timeout,
                           "postgres to accept connections again")

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.poll() is not None or time.monotonic() > deadline:
                self.sync_log()
                raise PgRestoreError(f"waited in vain for {what} in container {self.name}",
                                     checked=f"the container's state and log ({self.log_file})",
                                     fix="see the server log")
            time.sleep(0.1)

    def run_tool(self, name: str, args: list[str], *, timeout: float):
        """A PostgreSQL utility of the server's version, run in the container as the server user."""
        assert self.binaries is not None, "DockerRuntime.start gives its server the image's tools"
        return self.binaries.run(name, args, timeout=timeout)

    def stop(self, *, timeout: float = 30.0) -> None:
        """A clean shutdown first (SIGINT: fast shutdown), then the container goes."""
        self.container.shutdown(timeout)
        self.sync_log()
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-5:]
        except OSError:
            tail = []
        clean = any("database system is shut down" in line for line in tail)
        self.evidence["shutdown"] = "clean: database system is shut down" if clean else \
            f"not clean (exit code {self.container.poll()}): " + " | ".join(tail[-2:])
        self.container.remove()


class ContainerInstance(RestoredInstance):
    """Copy mode: no shared socket; admin connections use TCP with the per-run password."""

    server: DockerServer  # always given: the passwords are set through it

    def __init__(self, *, server: DockerServer, **kwargs) -> None:
        super().__init__(**kwargs)
        self.server = server

    def admin_connect(self, dbname: str | None = None, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn_for(user=self.user, dbname=dbname or self.dbname), **kwargs)

    def _password_for(self, role: str) -> str:
        if role not in self._passwords:
            password = secrets.token_urlsafe(18)
            self.server.set_password(role, password, admin=self.user)
            self._passwords[role] = password
        return self._passwords[role]


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 secret PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server_key)}"


class _PsqlProber:
    """Copy mode: no socket of the container's server is in reach here; psql inside it asks."""

    def __init__(self, server: DockerServer) -> None:
        self.server = server

    def __call__(self, user: str) -> Probe | None:
        return self.server._psql_probe(user)

    def close(self) -> None:
        """Nothing is kept open between calls."""
