"""The restore_command wrapper: the real /bin/sh script against a spool directory, checked
against its exit-code contract (0 moved, 1 confirmed absent, >= 200 everything else)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pytest_pgrestore.restore._spool import EXIT_CODES, write_wrapper

SEGMENT = "000000010000000000000005"
DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: never a running process


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    (d / "req").mkdir(parents=True)
    return d


@pytest.fixture
def pg_wal(tmp_path: Path) -> Path:
    d = tmp_path / "pgdata" / "pg_wal"
    d.mkdir(parents=True)
    return d


def wrapper(tmp_path: Path, spool: Path, *, pid: int | None = None, max_wait_s: float = 5.0) -> Path:
    return write_wrapper(
        tmp_path / "restore_wal.sh", spool, os.getpid() if pid is None else pid, max_wait_s=max_wait_s
    )


def run(script: Path, name: str, dest: Path, timeout: float = 10) -> subprocess.CompletedProcess:
    # as PostgreSQL runs restore_command: through the shell, %f and %p as arguments
    return subprocess.run(
        ["/bin/sh", "-c", f'"{script}" "$0" "$1"', name, str(dest)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_script_is_posix_sh_and_executable(tmp_path, spool):
    script = wrapper(tmp_path, spool)
    assert script.read_text().startswith("#!/bin/sh\n")
    assert os.access(script, os.X_OK)
    assert str(spool) in script.read_text()
    assert f"pid={os.getpid()}" in script.read_text()


def test_ready_file_is_moved_into_place(tmp_path, spool, pg_wal):
    (spool / SEGMENT).write_bytes(b"wal bytes")
    dest = pg_wal / "RECOVERYXLOG"
    proc = run(wrapper(tmp_path, spool), SEGMENT, dest)
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == b"wal bytes"
    assert not (spool / SEGMENT).exists()


def test_ready_file_wins_even_when_the_harness_is_gone(tmp_path, spool, pg_wal):
    (spool / "00000002.history").write_text("1\t0/9800000\tno recovery target specified\n")
    proc = run(wrapper(tmp_path, spool, pid=DEAD_PID), "00000002.history", pg_wal / "RECOVERYHISTORY")
    assert proc.returncode == 0


def test_confirmed_absent_is_exit_1(tmp_path, spool, pg_wal):
    (spool / "00000003.history.absent").touch()
    proc = run(wrapper(tmp_path, spool), "00000003.history", pg_wal / "RECOVERYHISTORY")
    assert proc.returncode == 1
    assert not (pg_wal / "RECOVERYHISTORY").exists()


def test_fetch_error_is_fatal(tmp_path, spool, pg_wal):
    (spool / f"{SEGMENT}.error").write_text("wal/000000010000000000000005.zst: Access Denied\n")
    proc = run(wrapper(tmp_path, spool), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 203
    assert 203 in EXIT_CODES


def test_harness_gone_is_fatal(tmp_path, spool, pg_wal):
    proc = run(wrapper(tmp_path, spool, pid=DEAD_PID), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 204


def test_harness_that_exits_while_the_wrapper_waits(tmp_path, spool, pg_wal):
    child = subprocess.Popen(["sleep", "0.15"])
    reaper = threading.Thread(target=child.wait)  # a dead but unreaped harness is still in /proc
    reaper.start()
    started = time.monotonic()
    proc = run(wrapper(tmp_path, spool, pid=child.pid), SEGMENT, pg_wal / "RECOVERYXLOG")
    reaper.join()
    assert proc.returncode == 204
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "name",
    ["../x", "", "..", ".", ".tmp.000000010000000000000005.1", "a/b", "x y", "$(id)", "00000001;rm", "é"],
)
def test_bad_names_are_fatal(tmp_path, spool, pg_wal, name):
    proc = run(wrapper(tmp_path, spool), name, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 200
    assert sorted(p.name for p in spool.iterdir()) == ["req"]
    assert list((spool / "req").iterdir()) == []


def test_waits_for_the_spool_and_asks_for_the_file(tmp_path, spool, pg_wal):
    seen_request = threading.Event()

    def harness():
        deadline = time.monotonic() + 5
        while not (spool / "req" / SEGMENT).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen_request.set()
        time.sleep(0.3)
        tmp = spool / f".tmp.{SEGMENT}"
        tmp.write_bytes(b"late wal")
        tmp.rename(spool / SEGMENT)

    t = threading.Thread(target=harness)
    t.start()
    started = time.monotonic()
    proc = run(wrapper(tmp_path, spool), SEGMENT, pg_wal / "RECOVERYXLOG")
    t.join()
    assert seen_request.is_set()
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 0.3
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == b"late wal"


def test_request_is_renewed_after_the_harness_took_it(tmp_path, spool, pg_wal):
    def harness():
        req = spool / "req" / SEGMENT
        for _ in range(2):  # take the request twice, as the spool's request loop does
            while not req.exists():
                time.sleep(0.005)
            req.unlink()
        (spool / SEGMENT).write_bytes(b"x")

    t = threading.Thread(target=harness)
    t.start()
    proc = run(wrapper(tmp_path, spool), SEGMENT, pg_wal / "RECOVERYXLOG")
    t.join()
    assert proc.returncode == 0


def test_absent_after_waiting(tmp_path, spool, pg_wal):
    threading.Timer(0.1, (spool / "00000004.history.absent").touch).start()
    proc = run(wrapper(tmp_path, spool), "00000004.history", pg_wal / "RECOVERYHISTORY")
    assert proc.returncode == 1


def test_wait_limit(tmp_path, spool, pg_wal):
    started = time.monotonic()
    proc = run(wrapper(tmp_path, spool, max_wait_s=0.1), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 205
    assert time.monotonic() - started < 3
    assert (spool / "req" / SEGMENT).exists()


def test_unwritable_request_dir_is_fatal_not_absent(tmp_path, spool, pg_wal):
    # A failed redirection on the special built-in ':' makes dash exit 2 and bash --posix exit 1,
    # which PostgreSQL would read as "no such file": recovery would end early instead of aborting.
    (spool / "req").rmdir()
    proc = run(wrapper(tmp_path, spool), SEGMENT, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 201


SHELLS = [
    sh
    for sh in (["/bin/dash"], ["/bin/bash"], ["/bin/bash", "--posix"], ["/bin/busybox", "sh"])
    if os.path.exists(sh[0])
]


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
@pytest.mark.parametrize(("setup", "code"), [("no-req-dir", 201), ("absent", 1), ("ready", 0), ("bad", 200)])
def test_contract_under_each_installed_shell(tmp_path, spool, pg_wal, shell, setup, code):
    # /bin/sh is dash on Debian, bash on RHEL, busybox on Alpine images
    name = "../x" if setup == "bad" else SEGMENT
    if setup == "no-req-dir":
        (spool / "req").rmdir()
    elif setup == "absent":
        (spool / f"{SEGMENT}.absent").touch()
    elif setup == "ready":
        (spool / SEGMENT).write_bytes(b"x")
    script = wrapper(tmp_path, spool)
    proc = subprocess.run(
        [*shell, str(script), name, str(pg_wal / "RECOVERYXLOG")], capture_output=True, text=True, timeout=10
    )
    assert proc.returncode == code, proc.stderr


def test_failed_move_is_fatal(tmp_path, spool, pg_wal):
    (spool / SEGMENT).write_bytes(b"x")
    proc = run(wrapper(tmp_path, spool), SEGMENT, pg_wal / "missing-dir" / "RECOVERYXLOG")
    assert proc.returncode == 202


def test_every_failure_exit_code_is_fatal_to_postgresql():
    # PostgreSQL aborts recovery for an exit status above 125 (wait_result_is_any_signal)
    assert all(code > 125 for code in EXIT_CODES)
    assert set(EXIT_CODES) == {200, 201, 202, 203, 204, 205}


def test_quotes_and_spaces_in_the_spool_path(tmp_path, pg_wal):
    odd = tmp_path / 'it\'s a "spool" $HOME'
    (odd / "req").mkdir(parents=True)
    (odd / SEGMENT).write_bytes(b"x")
    script = write_wrapper(tmp_path / "w.sh", odd, os.getpid(), max_wait_s=1)
    proc = run(script, SEGMENT, pg_wal / "RECOVERYXLOG")
    assert proc.returncode == 0, proc.stderr
    assert (pg_wal / "RECOVERYXLOG").read_bytes() == b"x"
