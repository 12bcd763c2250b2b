"""A harness SIGKILLed together with its supervisor leaves a running server; the next run's
sweep stops that server and removes its run directory (tests/unit/test_sweep.py: what it leaves)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from it_support import our_postgres_processes

from pytest_pgrestore.restore._rundir import list_run_dirs, sweep_stale

pytestmark = pytest.mark.integration

HARNESS = """
import sys, time
from pathlib import Path
from pytest_pgrestore.settings._options import resolve_settings
from pytest_pgrestore.restore._restorer import Restorer

settings = resolve_settings(cli={"source": sys.argv[1], "target": "immediate", "workdir": sys.argv[2]},
                            env={}, ini={})
with Restorer(settings).restore() as inst:
    Path(sys.argv[3]).write_text(str(inst.run_dir))
    time.sleep(600)
"""


def pids_with(needle: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_orphaned_server_of_a_killed_harness_is_swept_by_the_next_run(pg15, workroot):
    workdir, ready = workroot / "sweep-runs", workroot / "sweep-ready"
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, pg15.file_url, str(workdir), str(ready)])
    try:
        assert wait_for(ready.exists, 60), "premise: the restore came up"
        run_dir = Path(ready.read_text())
        postmaster = int((run_dir / "postmaster.child").read_text())
        for pid in pids_with(f"{run_dir}/supervisor.sh"):
            os.kill(pid, signal.SIGKILL)  # the supervisor first: nobody will clean up after the harness
        harness.kill()
        harness.wait(10)
        assert Path(f"/proc/{postmaster}").is_dir(), "premise: the server outlived its harness and supervisor"

        assert sweep_stale(workdir) == [run_dir]
        assert not run_dir.exists()
        assert wait_for(lambda: not Path(f"/proc/{postmaster}").is_dir(), 5)
        assert list_run_dirs(workdir) == []
        assert our_postgres_processes(workroot) == []
    finally:
        if harness.poll() is None:
            harness.kill()
        for pid in pids_with(str(workdir)):
            os.kill(pid, signal.SIGKILL)
