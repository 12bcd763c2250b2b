"""Plain helpers for the plugin's end-to-end tests (fixtures live in conftest.py).

The real-backup builders are re-exported from ``tests/integration/it_support.py``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from it_support import Scenario, build_scenario, copy_repo, our_postgres_processes, run_dirs  # noqa: E402

__all__ = [
    "Scenario",
    "build_scenario",
    "copy_repo",
    "kill_our_postgres",
    "leftovers",
    "our_postgres_processes",
    "run_dirs",
    "wait_for",
]


def leftovers(workroot: Path) -> tuple[list[str], list[str]]:
    """(run dirs, postmaster pids) of ours still present under ``workroot``."""
    return run_dirs(workroot), our_postgres_processes(workroot)


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def kill_our_postgres(workroot: Path) -> None:
    """Stop every postmaster under ``workroot`` (a kept server, or one a bug left running)."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        for pid in our_postgres_processes(workroot):
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass
        if wait_for(lambda: not our_postgres_processes(workroot), 10):
            return
