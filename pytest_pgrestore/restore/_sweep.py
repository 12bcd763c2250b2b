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


def _pids_running(run_dir: Path, marker: str) -> list[int]:
    """Processes whose command line mentions ``<run_dir>/<marker>`` (ours, whatever their pid)."""
    needle = str(run_dir / marker).encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def _postmaster_still_running(run_dir: Path) -> str | None:
    """Stop a postmaster its supervisor no longer watches; None once none runs.

    A postmaster is only signalled when its command line names this run's config file, so a
    recycled pid is never hit.
    """
    running = _pids_running(run_dir, "postgresql.conf")  # config_file=<run dir>/postgresql.conf
    supervisors = _pids_running(run_dir, "supervisor.sh")
    postmasters = [p for p in running if p not in supervisors]
    if not postmasters:
        return None
    if supervisors:
        return "its supervisor is still shutting its server down"
    for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        for pid in postmasters:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not any(os.path.isdir(f"/proc/{p}") and _is_ours(p, run_dir) for p in postmasters):
                log.warning(
                    "stopped the orphaned server of %s (pid %s) with %s", run_dir, postmasters, sig.name
                )
                return None
            time.sleep(0.05)
    return f"its server (pid {postmasters}) did not stop"


def _is_ours(pid: int, run_dir: Path) -> bool:
    try:
        return str(run_dir / "postgresql.conf").encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _remove(run_dir: Path) -> None:
    link = run_dir / "sock.link"
    try:
        shutil.rmtree(link.read_text().strip(), ignore_errors=True)
    except OSError:
        pass
    shutil.rmtree(run_dir, ignore_errors=True)
