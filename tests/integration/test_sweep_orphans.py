"""A harness SIGKILLed together with its supervisor: in a PID namespace the server goes with the
supervisor (the kernel ends the namespace); without one (the subreaper fallback) the postmaster
still does (PR_SET_PDEATHSIG).  Either way the next run's sweep removes the run directory
(tests/unit/test_sweep.py: what it leaves; it also stops a server an older version left)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from it_support import our_postgres_processes, postmaster_of, wait_for

from pytest_pgrestore.restore._rundir import list_run_dirs, sweep_stale

pytestmark = pytest.mark.integration

HARNESS = """
import sys, time
from pathlib import Path
import pytest_pgrestore.runtimes._local as local
local.NAMESPACES = sys.argv[4] == "ns"
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


def start_harness(pg15, workroot, mode: str):
    workdir, ready = workroot / f"sweep-runs-{mode}", workroot / f"sweep-ready-{mode}"
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, pg15.file_url, str(workdir), str(ready), mode])
    assert wait_for(ready.exists, 60), "premise: the restore came up"
    run_dir = Path(ready.read_text())
    postmaster = postmaster_of(run_dir)
    assert postmaster, "premise: the supervisor's postmaster is found through /proc"
    assert (run_dir / "containment").read_text().strip() == ("pid-namespace" if mode == "ns" else "subreaper")
    return harness, workdir, run_dir, postmaster


def kill_supervisor_and_harness(harness, run_dir: Path) -> None:
    for pid in pids_with(f"{run_dir}"):
        try:  # a process that matched a moment ago (a restore_command) may be gone already
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"_supervise.py" in argv:
            os.kill(pid, signal.SIGKILL)  # the supervisor first: nobody will clean up after the harness
    harness.kill()
    harness.wait(10)


def test_a_killed_supervisor_takes_its_namespace_and_the_server_with_it(pg15, workroot):
    harness, workdir, run_dir, postmaster = start_harness(pg15, workroot, "ns")
    try:
        kill_supervisor_and_harness(harness, run_dir)
        assert wait_for(lambda: not Path(f"/proc/{postmaster}").is_dir(), 5), "the namespace outlived its init"
        assert sweep_stale(workdir) == [run_dir]
        assert not run_dir.exists() and list_run_dirs(workdir) == []
        assert our_postgres_processes(workroot) == []
    finally:
        if harness.poll() is None:
            harness.kill()
        for pid in pids_with(str(workdir)):
            os.kill(pid, signal.SIGKILL)


def test_without_a_namespace_the_postmaster_still_dies_with_its_supervisor(pg15, workroot):
    """The subreaper fallback: the postmaster goes with its supervisor (PR_SET_PDEATHSIG), and the
    next run's sweep removes the run dir.  (What the fallback cannot promise — a process started
    with setsid outliving a SIGKILLed supervisor — is the twin in test_containment.py.)"""
    harness, workdir, run_dir, postmaster = start_harness(pg15, workroot, "subreaper")
    try:
        kill_supervisor_and_harness(harness, run_dir)
        assert wait_for(lambda: not Path(f"/proc/{postmaster}").is_dir(), 5), "the postmaster outlived its supervisor"
        assert sweep_stale(workdir) == [run_dir]
        assert not run_dir.exists()
        assert list_run_dirs(workdir) == []
        assert our_postgres_processes(workroot) == []
    finally:
        if harness.poll() is None:
            harness.kill()
        for pid in pids_with(str(workdir)):
            os.kill(pid, signal.SIGKILL)
