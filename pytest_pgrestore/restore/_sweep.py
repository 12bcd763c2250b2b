"""Who owns a run directory, and the sweep that removes only what nobody owns any more.

Every run directory records, in ``run.json``, {run id, boot id, harness pid, the harness's
process start time, expiry}.  At the start of a restore the sweep looks at every run dir under
the workdir and removes a leftover — its harness is gone on this boot (the pid is dead, or now
belongs to another process: the start time differs), or its expiry passed — stopping its
postmaster first when one still runs and no supervisor is taking care of it.  Everything else is
listed and left alone: a concurrent run, a run kept on purpose (``--restore-keep``), a run dir
from another boot or machine that has not expired.

Container leftovers are swept by :mod:`pytest_pgrestore.runtimes._docker_sweep` with the same rule.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..runtimes._host import boot_id, process_start

log = logging.getLogger(__name__)

__all__ = ["RECORD", "DEFAULT_LIFETIME", "Sweep", "write_record", "why_over", "sweep"]

RECORD = "run.json"
DEFAULT_LIFETIME = 2 * 86400.0  # seconds: a run dir older than this is a leftover whoever made it


@dataclass
class Sweep:
    removed: list[tuple[Path, str]] = field(default_factory=list)
    left: list[tuple[Path, str]] = field(default_factory=list)  # listed, not touched: and why


def write_record(run_dir: Path, *, lifetime: float = DEFAULT_LIFETIME) -> dict:
    from ._owner import harness_pid

    now = time.time()
    pid = harness_pid()  # the xdist controller for a restore shared by the workers
    record = {
        "run_id": run_dir.name,
        "boot_id": boot_id(),
        "pid": pid,
        "pid_start": process_start(pid),
        "created": int(now),
        "expires": int(now + lifetime),
    }
    (run_dir / RECORD).write_text(json.dumps(record) + "\n")
    return record


def _read_record(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        pass
    try:  # a run dir written before run.json existed: the harness pid alone
        return {"pid": int((run_dir / "harness.pid").read_text()), "boot_id": boot_id()}
    except (OSError, ValueError):
        return None


def why_over(record: dict, *, now: float | None = None) -> tuple[bool, str]:
    """(is it a leftover, why) for one run's record."""
    expires = record.get("expires")
    if isinstance(expires, (int, float)) and expires < (now or time.time()):
        return True, f"its expiry passed ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(expires))})"
    pid = record.get("pid")
    if record.get("boot_id") != boot_id():
        return False, "it was made on another boot or machine and has not expired yet"
    if not isinstance(pid, int):
        return False, "its record names no harness"
    start = process_start(pid)
    if start is None:
        return True, f"its harness (pid {pid}) is gone"
    if record.get("pid_start") and start != record["pid_start"]:
        return True, f"its harness's pid {pid} now belongs to another process"
    return False, f"its harness (pid {pid}) is still running"


def sweep(workdir: Path, run_dirs: list[Path]) -> Sweep:
    """Remove leftover run dirs among ``run_dirs``; list the others with the reason."""
    done = Sweep()
    for d in run_dirs:
        record = _read_record(d)
        if record is None:
            done.left.append((d, "no record of its owner (run.json / harness.pid)"))
            continue
        if (d / "keep").exists():
            done.left.append((d, "kept on purpose (--restore-keep): it holds a copy of production data"))
            continue
        over, why = why_over(record)
        if not over:
            done.left.append((d, why))
            continue
        busy = _postmaster_still_running(d)
        if busy:
            done.left.append((d, busy))
            continue
        _remove(d)
        done.removed.append((d, why))
        log.warning("removed the leftover run directory %s: %s", d, why)
    for d, why in done.left:
        log.info("left run directory %s alone: %s", d, why)
    return done


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def supervisor_pids(run_dir: Path) -> list[int]:
    """The supervisors of ``run_dir``: ``_supervise.py … --run <run_dir>``, running as we do (a
    process of the server user that dresses up as one is not one)."""
    me, arg = os.geteuid(), str(run_dir).encode()
    found = []
    for pid in _all_pids():
        argv = _cmdline(pid)
        if (any(a.endswith(b"_supervise.py") for a in argv) and b"--run" in argv
                and argv[argv.index(b"--run") + 1:argv.index(b"--run") + 2] == [arg] and _uid(pid) == me):
            found.append(pid)
    return found


def _postmasters(run_dir: Path) -> list[int]:
    """Processes started with ``config_file=<run_dir>/postgresql.conf`` that run as the owner of
    the run's PGDATA — never one of root's when we are root: whatever a command line says, only the
    server user's own processes are signalled."""
    needle = f"config_file={run_dir / 'postgresql.conf'}".encode()
    try:
        server_uid = os.stat(run_dir / "pgdata").st_uid
    except OSError:
        return []
    if os.geteuid() == 0 and server_uid == 0:
        return []
    return [pid for pid in _all_pids() if needle in _cmdline(pid) and _uid(pid) == server_uid]


def _postmaster_still_running(run_dir: Path) -> str | None:
    """Stop a postmaster its supervisor no longer watches; None once none runs.

    Only reachable when the supervisor ran without a PID namespace (its death ends the namespace
    and every process in it otherwise).  A process is only signalled while its command line names
    this run's config file and it runs as the server user, so a recycled pid is never hit.
    """
    if supervisor_pids(run_dir):
        return "its supervisor is still shutting its server down"
    postmasters = _postmasters(run_dir)
    if not postmasters:
        return None
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        for pid in postmasters:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not set(postmasters) & set(_postmasters(run_dir)):
                log.warning(
                    "stopped the orphaned server of %s (pid %s) with %s", run_dir, postmasters, sig.name
                )
                return None
            time.sleep(0.05)
    return f"its server (pid {postmasters}) did not stop"


SOCKET_PREFIX = "pgr-"


def linked_socket_dir(run_dir: Path) -> Path | None:
    """The socket dir outside the run dir named in ``sock.link``, when it is one we would have
    made (``/tmp/pgr-…``, one level, not a symlink); None otherwise."""
    try:
        text = (run_dir / "sock.link").read_text().strip()
    except OSError:
        return None
    path = Path(text)
    if (path.parent != Path("/tmp") or not path.name.startswith(SOCKET_PREFIX) or path.is_symlink()
            or not path.is_dir()):
        return None
    return path


def _remove(run_dir: Path) -> None:
    linked = linked_socket_dir(run_dir)
    if linked is not None:
        shutil.rmtree(linked, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
