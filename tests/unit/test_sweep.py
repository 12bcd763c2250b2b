"""The run-dir sweep against real processes: what it removes, what it only lists, and why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pytest_pgrestore.restore._rundir import RunDir, list_run_dirs, sweep_stale
from pytest_pgrestore.restore._sweep import RECORD, sweep, why_over
from pytest_pgrestore.runtimes._docker_sweep import boot_id, process_start


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def run_dir(workdir: Path, name: str, **record) -> Path:
    d = workdir / name
    d.mkdir(parents=True)
    full = {
        "run_id": name,
        "boot_id": boot_id(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "created": int(time.time()),
        "expires": int(time.time()) + 3600,
        **record,
    }
    (d / RECORD).write_text(json.dumps(full))
    (d / "pgdata").mkdir()
    return d


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_create_records_who_owns_the_run(workdir):
    run = RunDir.create(workdir, owner=None, label="s3://b/p latest")
    record = json.loads((run.path / RECORD).read_text())
    assert record["run_id"] == run.path.name and record["boot_id"] == boot_id()
    assert (record["pid"], record["pid_start"]) == (os.getpid(), process_start(os.getpid()))
    assert record["expires"] > record["created"] >= int(time.time()) - 5
    assert why_over(record) == (False, f"its harness (pid {os.getpid()}) is still running")


def test_sweep_removes_only_what_nobody_owns_and_lists_the_rest(workdir):
    gone = run_dir(workdir, "r-gone", pid=dead_pid())
    reused = run_dir(workdir, "r-reused", pid_start="1")  # our pid, but not our start time
    expired = run_dir(workdir, "r-expired", expires=int(time.time()) - 1)  # alive, yet past its expiry
    alive = run_dir(workdir, "r-alive")
    other_boot = run_dir(workdir, "r-other-boot", boot_id="00000000-other", pid=dead_pid())
    kept = run_dir(workdir, "r-kept", pid=dead_pid())
    (kept / "keep").write_text("kept\n")

    done = sweep(workdir, list_run_dirs(workdir))

    removed = {d.name: why for d, why in done.removed}
    assert removed.keys() == {"r-gone", "r-reused", "r-expired"}
    assert removed["r-gone"].startswith("its harness (pid ") and removed["r-gone"].endswith(") is gone")
    assert "now belongs to another process" in removed["r-reused"]
    assert removed["r-expired"].startswith("its expiry passed")
    left = {d.name: why for d, why in done.left}
    assert left == {
        "r-alive": f"its harness (pid {os.getpid()}) is still running",
        "r-other-boot": "it was made on another boot or machine and has not expired yet",
        "r-kept": "kept on purpose (--restore-keep): it holds a copy of production data",
    }
    assert not gone.exists() and not reused.exists() and not expired.exists()
    assert alive.exists() and other_boot.exists() and kept.exists()


def test_a_run_dir_from_before_records_falls_back_to_its_harness_pid(workdir):
    old = workdir / "r-old"
    (old / "pgdata").mkdir(parents=True)
    (old / "harness.pid").write_text(str(dead_pid()))
    assert sweep_stale(workdir) == [old] and not old.exists()


def test_the_private_socket_dir_goes_with_its_run_dir(workdir):
    sock = Path(tempfile.mkdtemp(prefix="pgr-", dir="/tmp"))  # where RunDir.socket_dir makes one
    d = run_dir(workdir, "r-gone", pid=dead_pid())
    (d / "sock.link").write_text(str(sock))
    sweep_stale(workdir)
    assert not d.exists() and not sock.exists()


@pytest.mark.parametrize("where", ["elsewhere", "tmp-not-ours", "symlink"])
def test_a_sock_link_naming_anything_else_removes_nothing_but_the_run_dir(workdir, tmp_path, where):
    """Twin: sock.link is a path the harness reads back; one naming a directory it would not
    have made (another folder, a /tmp dir without our prefix, a symlink to a folder) is ignored."""
    canary = tmp_path / "precious"
    canary.mkdir()
    (canary / "file").write_text("keep me")
    target = {"elsewhere": canary,
              "tmp-not-ours": Path(tempfile.mkdtemp(prefix="other-", dir="/tmp")),
              "symlink": Path(tempfile.mktemp(prefix="pgr-", dir="/tmp"))}[where]
    if where == "symlink":
        target.symlink_to(canary)
    try:
        d = run_dir(workdir, "r-gone", pid=dead_pid())
        (d / "sock.link").write_text(str(target))
        sweep_stale(workdir)
        assert not d.exists()
        assert (canary / "file").read_text() == "keep me" and target.exists()
    finally:
        if target.is_symlink():
            target.unlink()
        elif target != canary:
            shutil.rmtree(target, ignore_errors=True)
