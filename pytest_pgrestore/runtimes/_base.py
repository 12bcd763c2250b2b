"""The runtime interface: where a restored PGDATA is served, as the restore attempt sees it.

The attempt fetches and unpacks the backup into a run dir on this machine, then asks its runtime
for everything that depends on where the server runs: binaries of the backup's major version,
the OS user that owns the server's files, the port, starting the server with our config, the
``RestoredInstance`` the fixtures get, and closing.  It never asks which runtime it has.

A runtime is one module that subclasses :class:`Runtime` (``local.py``, ``docker.py``) plus its
choice in :func:`pytest_pgrestore.runtimes.choose`; the restore stage does not change.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..restore._instance import RestoredInstance

if TYPE_CHECKING:
    from ..restore._rundir import RunDir
    from ._probe import Probe

__all__ = ["Binaries", "RecoveryProber", "Runtime", "Server", "ToolPath"]


class ToolPath(Protocol):
    """Where a utility is: a ``Path`` here, a ``ContainerPath`` in the container; ``str()`` names it."""

    def exists(self) -> bool: ...


class Binaries(Protocol):
    """PostgreSQL of one major version, where the server runs (``PgBinaries``, ``ImageTools``)."""

    @property
    def bindir(self) -> Path: ...

    @property
    def version(self) -> str: ...

    @property
    def major(self) -> int: ...

    @property
    def origin(self) -> str: ...

    def tool(self, name: str) -> ToolPath: ...

    def has(self, name: str) -> bool:
        """Is the utility there?"""

    def run(self, name: str, args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run a utility where the binaries are (here, or in the container), on the run dir."""


class Server(Protocol):
    """What :meth:`Runtime.start` returns (``LocalServer``, ``DockerServer``)."""

    host: str
    port: int
    socket_dir: str | None  # None when no socket of the server is reachable from here

    def poll(self) -> int | None:
        """The exit code when the server has exited, else None."""

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop the server (clean shutdown first)."""

    def offline(self, *, timeout: float = 60.0) -> AbstractContextManager[Server]:
        """Stop cleanly, yield while the cluster is down, start again on the same port and socket."""

    def run_tool(self, name: str, args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
        """A PostgreSQL utility of the server's version, run as the server user where it runs."""

    def recovery_prober(self) -> RecoveryProber:
        """What asks the server where recovery is, while the attempt watches it (then closed)."""

    def sync_log(self) -> None:
        """Bring the server's log up to date in the run dir's log file (a no-op where the server
        writes that file itself)."""


class RecoveryProber(Protocol):
    """``prober(user)``: where recovery is (a ``Probe``), or None when the server did not answer."""

    def __call__(self, user: str) -> Probe | None: ...

    def close(self) -> None: ...


class Runtime(ABC):
    """One runtime per restore attempt.  The attempt calls, in this order:

    :meth:`binaries` (once the backup's major version is known, again if PG_VERSION says
    otherwise) and :attr:`owner`; :meth:`attach` (once the run dir exists); :meth:`listen_port`,
    :meth:`wal_heartbeat` and :meth:`start`; :meth:`describe` for the evidence; :meth:`instance`;
    :meth:`close` at the end, with ``keep`` when the run is kept."""

    name: str

    def __init__(self, settings, *, evidence: dict | None = None) -> None:
        self.settings = settings
        self.evidence = evidence if evidence is not None else {}
        self.run: RunDir | None = None  # once attached
        self.port: int | None = None

    # -- binaries and files ---------------------------------------------------------------------
    @abstractmethod
    def binaries(self, major: int) -> Binaries:
        """PostgreSQL ``major``'s binaries the server will run, checked (``BinariesNotFound``)."""

    @property
    @abstractmethod
    def owner(self) -> tuple[int, int] | None:
        """(uid, gid) that must own the server's files on this side; None: leave owners alone."""

    # -- the run dir and the server -------------------------------------------------------------
    def attach(self, run: RunDir, *, port: int | None) -> None:
        """Bind to the run dir and the port postgres will listen on (None: a free one, picked by
        :meth:`listen_port` when the server's settings are written)."""
        self.run, self.port = run, port

    def attached(self) -> RunDir:
        """The run dir :meth:`attach` bound (the attempt attaches before it starts anything)."""
        if self.run is None:
            raise RuntimeError(f"{type(self).__name__}.attach() comes before the run dir is used")
        return self.run

    def listen_port(self) -> int:
        """The port the server will listen on."""
        if self.port is None:
            from ..restore._rundir import free_port

            self.port = free_port()
        return self.port

    def wal_heartbeat(self) -> Path | None:
        """A file the harness keeps fresh, for a restore_command that cannot see the harness's
        pid (a container); None: the wrapper watches ``/proc/<harness pid>``."""
        return None

    @abstractmethod
    def start(self, *, config_file: Path, settings: dict[str, str], socket_dir: Path, spool,
              extra_wal: dict[str, str], kept: dict[str, str]) -> Server:
        """Start postgres over the attached run dir with ``config_file`` and ``settings`` on its
        command line (they beat every file in PGDATA); ``spool`` delivers WAL, ``extra_wal`` names
        the history files a runtime that cannot read the spool on demand must stage, ``kept`` the
        files quarantine took out of PGDATA."""

    def describe(self) -> str | None:
        """One line for the evidence (``runtime_detail``), or None when there is nothing to add."""
        return None

    def instance(self, **kwargs) -> RestoredInstance:
        """The ``RestoredInstance`` the fixtures get for the started server."""
        return RestoredInstance(**kwargs)

    def close(self, *, keep: bool = False) -> None:
        """Release what the runtime holds besides the server (``keep``: leave it for the user).
        By default it holds nothing else: stopping the server is all."""
        return None
