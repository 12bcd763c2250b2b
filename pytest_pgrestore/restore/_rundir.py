"""The run directory: everything the restored server reads lives under one private directory.

``<workdir>/<run-id>`` (default ``$TMPDIR/pgrestore-<uid>/r-…``) — never under pytest's basetemp
or a root-only venv.  A ``run.json`` record (run id, boot id, harness pid and start time, expiry)
lets a later run sweep away the leftovers of one that was killed (:mod:`.sweep`).

When the harness runs as root and the server as another user, the run dir itself and every file
the harness later acts on (``run.json``, ``keep``, ``sock.link``, ``supervisor.pid``,
``password``, the server log, the configuration, the quarantined ``evidence/``) belong to root:
the server user — and so any SQL in the restored copy — can read the configuration but write none
of them.  Only ``pgdata``, ``spool``, ``sock`` and ``tablespaces`` are the server user's.  The
run dir is 0711 then (the server user passes through to its directories, and lists nothing).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import _faults
from ._sweep import SOCKET_PREFIX, linked_socket_dir, sweep, write_record

__all__ = ["RunDir", "free_port", "sweep_stale", "list_run_dirs"]

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes including ".s.PGSQL.NNNNN"


@dataclass
class RunDir:
    path: Path
    owner: tuple[int, int] | None
    external_pgdata: Path | None = None  # a manual restore into a directory the user chose

    @classmethod
    def create(cls, workdir: Path, *, owner: tuple[int, int] | None, label: str = "",
               pgdata: Path | None = None) -> RunDir:
        prepare_workdir(workdir, owner)
        sweep_stale(workdir)
        name = f"r-{time.strftime('%H%M%S')}-{secrets.token_hex(3)}"
        path = workdir / name
        made = False
        try:  # an interrupt half-way must not leave a run dir nobody will remove
            path.mkdir(mode=0o700)
            made = True
            if owner:
                path.chmod(0o711)
            _faults.point("rundir.created")
            run = cls(path, owner, pgdata)
            if pgdata is not None:
                _claim_empty_dir(pgdata, owner)
            from ._owner import harness_pid

            (path / "harness.pid").write_text(str(harness_pid()))
            write_record(path)  # {run id, boot id, pid, pid start, expiry}: what a later sweep trusts
            if label:
                (path / "label").write_text(label + "\n")
            for sub in ("pgdata", "spool", "evidence"):
                (path / sub).mkdir(mode=0o700)
            run.chown_tree()
        except BaseException:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return run

    @property
    def pgdata(self) -> Path:
        return self.external_pgdata or self.path / "pgdata"

    @property
    def spool(self) -> Path:
        return self.path / "spool"

    @property
    def log_file(self) -> Path:
        return self.path / "postgres.log"

    def socket_dir(self) -> Path:
        """A directory short enough for a unix socket path; under the run dir when possible."""
        d = self.path / "sock"
        if len(str(d)) + 20 > _MAX_SOCKET_PATH:
            d = Path(tempfile.mkdtemp(prefix=SOCKET_PREFIX, dir="/tmp"))
            (self.path / "sock.link").write_text(str(d))
        d.mkdir(mode=0o700, exist_ok=True)
        if self.owner:
            os.chown(d, *self.owner)
        return d

    def chown_tree(self, *, whole: bool = False) -> None:
        """Hand the server user its directories (``pgdata``, ``sock``, ``tablespaces``; the spool
        chowns itself).  The run dir, its files and ``evidence/`` stay the harness's, readable
        but for the private ones.  ``whole``: the run dir and everything in it (a container's
        supervisor writes its own files there; the container is the boundary then)."""
        if not self.owner:
            return
        uid, gid = self.owner
        top = str(self.path)
        for root, dirs, files in os.walk(self.path):
            if root == str(self.spool):  # the WAL spool chowns what it writes, and may be writing now
                dirs[:] = []
                continue
            if root == top and not whole:
                dirs[:] = [d for d in dirs if d not in _HARNESS_DIRS]
                for name in files:
                    if not os.path.islink(os.path.join(root, name)):
                        os.chmod(os.path.join(root, name), 0o600 if name in _PRIVATE_FILES else 0o644)
                continue
            os.chown(root, uid, gid)
            for name in files + dirs:
                os.lchown(os.path.join(root, name), uid, gid)

    def keep(self) -> None:
        """Tell the supervisor this run outlives the harness."""
        write_private(self.path / "keep", "kept on purpose: holds a copy of production data\n", mode=0o644)

    def remove(self, *, keep_pgdata: bool = False) -> None:
        if self.external_pgdata is not None and not keep_pgdata:
            shutil.rmtree(self.external_pgdata, ignore_errors=True)
        linked = linked_socket_dir(self.path)
        if linked is not None:
            shutil.rmtree(linked, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)


_HARNESS_DIRS = {"evidence"}  # production's quarantined configuration: nothing the server needs
_PRIVATE_FILES = {"password", "postgres.log"}


def write_private(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Create ``path`` anew (never through a symlink or into an existing file) with ``text``."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def prepare_workdir(workdir: Path, owner: tuple[int, int] | None) -> None:
    """Make ``workdir`` if it is missing (0755: the server user traverses it to its own run dir).
    A directory that exists keeps its mode — ``/tmp`` keeps its sticky bit — and must already be
    traversable by the server user; the run dirs inside it are the product's own (0700)."""
    if not workdir.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o755)
        return
    blocked = _not_traversable(workdir, owner)
    if blocked is not None:
        from ..errors import UsageError

        raise UsageError(
            f"the restore's server user (uid {owner[0] if owner else '?'}) cannot reach --restore-workdir "
            f"{workdir}: {blocked} does not let it through",
            checked="the search (x) permission of every directory on the way, for that user",
            fix="choose a directory the server user can traverse (e.g. /var/tmp/pgrestore, which is made "
                "for you if missing); its mode is never changed for you")


def _not_traversable(path: Path, owner: tuple[int, int] | None) -> str | None:
    """The first directory on the way to ``path`` that ``owner`` may not search, with its mode."""
    import stat

    if owner is None or owner[0] == 0:  # the server runs as we do: we got here, so can it
        return None
    uid, gid = owner
    for step in [*reversed(path.absolute().parents), path.absolute()]:
        st = step.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return f"{step} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})"
    return None


def list_run_dirs(workdir: Path) -> list[Path]:
    """Every run dir under ``workdir`` (and under ``srv-<uid>/``, where earlier versions put the
    run dirs of a server user)."""
    if not workdir.is_dir():
        return []
    return sorted([*workdir.glob("r-*"), *workdir.glob("srv-*/r-*")])


def _claim_empty_dir(path: Path, owner: tuple[int, int] | None) -> None:
    from ..errors import UsageError

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--pgdata {path} exists and is not an empty directory",
                         checked=f"the contents of {path}",
                         fix="choose a new directory, or empty this one first")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    if owner:
        os.chown(path, *owner)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_stale(workdir: Path) -> list[Path]:
    """Remove the run dirs whose owner is gone (see :mod:`.sweep`); the others are listed in the log."""
    return [d for d, _why in sweep(workdir, list_run_dirs(workdir)).removed]
