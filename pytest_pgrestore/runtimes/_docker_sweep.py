"""Labels that tie a container to the run that made it, and the sweep of leftovers.

Every container records {run id, boot id, pid, process start time, expiry}.  A sweep removes
only containers whose harness is gone on this boot (the pid is dead, or reused by another
process) or whose expiry passed, and leaves a concurrent run's containers — and runs kept on
purpose — alone.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ._host import boot_id, process_start

log = logging.getLogger(__name__)

__all__ = ["LABEL", "run_labels", "is_leftover", "sweep_containers", "boot_id", "process_start"]

LABEL = "org.pytest-pgrestore"
_KEYS = ("run-id", "boot-id", "pid", "pid-start", "started", "expires", "run-dir")


def run_labels(run_id: str, run_dir: Path, *, lifetime: float) -> dict[str, str]:
    now = time.time()
    values = {"run-id": run_id, "boot-id": boot_id(), "pid": str(os.getpid()),
              "pid-start": process_start(os.getpid()) or "", "started": str(int(now)),
              "expires": str(int(now + lifetime)), "run-dir": str(run_dir)}
    return {f"{LABEL}.{k}": values[k] for k in _KEYS}


def is_leftover(labels: dict[str, str], *, now: float | None = None) -> str | None:
    """Why the container's run is over (None while its harness may still use it)."""
    get = lambda k: labels.get(f"{LABEL}.{k}", "")  # noqa: E731
    try:
        if float(get("expires")) < (now or time.time()):
            return "its expiry passed"
    except ValueError:
        pass
    if get("boot-id") != boot_id():
        return None  # another machine or an earlier boot: only its expiry can tell
    try:
        pid = int(get("pid"))
    except ValueError:
        return None
    start = process_start(pid)
    if start is None:
        return f"its harness (pid {pid}) is gone"
    if get("pid-start") and start != get("pid-start"):
        return f"its harness's pid {pid} now belongs to another process"
    return None


def _kept(container) -> bool:
    """A running container whose run dir holds ``keep`` was kept on purpose."""
    if container.status != "running":
        return False
    run_dir = container.labels.get(f"{LABEL}.run-dir", "")
    try:
        res = container.exec_run(["sh", "-c", 'test -e "$1/keep"', "sh", run_dir], user="0")
    except Exception:
        return False
    return res.exit_code == 0


def sweep_containers(client) -> list[str]:
    """Remove our leftover containers; return their names."""
    import docker.errors

    removed: list[str] = []
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL}.run-id"})
    except docker.errors.APIError as exc:
        log.warning("could not list containers to sweep: %s", exc)
        return removed
    for c in containers:
        why = is_leftover(c.labels)
        if why is None:
            continue
        if "expiry" not in why and _kept(c):
            log.info("container %s is kept on purpose (%s); not removed", c.name, why)
            continue
        try:
            if c.status == "running":
                c.kill(signal="SIGINT")  # a clean shutdown first: postgres may still run
                try:
                    c.wait(timeout=30)
                except Exception:
                    pass
            c.remove(force=True, v=True)
            removed.append(c.name)
            log.warning("removed leftover container %s: %s", c.name, why)
        except docker.errors.APIError as exc:
            log.warning("could not remove leftover container %s: %s", c.name, exc)
    return removed
