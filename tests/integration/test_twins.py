"""Each success scenario next to its twin with one injected defect, which must fail by name.

Nothing may be left behind by either: no run directory, no postgres process.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from it_support import copy_repo, our_postgres_processes, run_dirs

from pytest_pgrestore.errors import PgRestoreError, PreflightError, RestoreFailed
from pytest_pgrestore.restore._instance import Hooks
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


def count_rows(settings, hooks=None) -> tuple[int, object]:
    with Restorer(settings, hooks=hooks).restore() as inst:
        with inst.connect() as conn:
            return conn.execute("select count(*) from t").fetchone()[0], inst.result


def newest_segment(repo: Path) -> Path:
    return max(p for p in (repo / "wal").iterdir() if len(p.name) == 24)


# -- latest: the archive's newest segment must be replayed ------------------------------------
def test_latest_reaches_the_newest_segment(pg15, settings_factory):
    rows, result = count_rows(settings_factory(pg15.file_url))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")


def test_twin_latest_with_last_segment_missing_during_replay_is_truncated(pg15, settings_factory, tmp_path_factory):
    """The archive lags: the last segment is absent when replay asks, present when it's over."""
    repo = copy_repo(pg15, Path(f"/tmp/pgr-twin-{os.getpid()}-trunc"))
    try:
        last = newest_segment(repo)
        held = last.rename(last.with_name(".held"))
        spool_seen = threading.Event()

        def put_back_once_asked(server):
            def watch():
                absent = server.run_dir / "spool" / f"{last.name}.absent"
                deadline = time.monotonic() + 60
                while not absent.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                held.rename(last)
                spool_seen.set()

            threading.Thread(target=watch, daemon=True).start()

        with pytest.raises(RestoreFailed) as err:
            count_rows(settings_factory(f"file://{repo}"), Hooks(after_start=put_back_once_asked))
        assert spool_seen.is_set()
        assert err.value.result.outcome == "TRUNCATED"
        assert "segment(s) were not replayed" in str(err.value)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


# -- targets past the end of the archive ---------------------------------------------------
def test_twin_time_target_past_the_archive_is_refused_before_download(pg15, settings_factory):
    target = (pg15.commits["c2"][-1].time + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    with pytest.raises(PreflightError) as err:
        count_rows(settings_factory(pg15.file_url, target))
    assert err.value.result.outcome == "REFUSED_PREFLIGHT"
    assert "past the end of the archive" in str(err.value)
    assert err.value.result.bytes_fetched == 0


def test_twin_time_target_after_the_last_commit_ends_early(pg15, settings_factory):
    target = (pg15.commits["c2"][-1].time + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    with pytest.raises(RestoreFailed) as err:
        count_rows(settings_factory(pg15.file_url, target))
    assert err.value.result.outcome == "ENDED_EARLY"
    assert "recovery ended before configured recovery target was reached" in str(err.value)


def test_twin_lsn_target_past_the_archive_is_refused(pg15, settings_factory):
    with pytest.raises(PreflightError) as err:
        count_rows(settings_factory(pg15.file_url, "lsn:FF/0"))
    assert "past the newest archived WAL" in str(err.value)


def test_twin_gap_in_the_needed_wal_is_refused_naming_the_segment(pg15, settings_factory):
    repo = copy_repo(pg15, Path(f"/tmp/pgr-twin-{os.getpid()}-gap"))
    try:
        segs = sorted(p for p in (repo / "wal").iterdir() if len(p.name) == 24)
        segs[-2].unlink()
        with pytest.raises(PreflightError) as err:
            count_rows(settings_factory(f"file://{repo}"))
        assert segs[-2].name in str(err.value)
        assert "reachable without a gap up to" in str(err.value)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


# -- a promoted timeline ------------------------------------------------------------------
@pytest.fixture(scope="module")
def promoted(workroot):
    from pytest_pgrestore.demo._source import SourceCluster

    root = workroot / "promoted"
    root.mkdir()
    repo = root / "repo"
    with SourceCluster(root / "src", repo=repo, major=15) as src:
        src.commit_rows(2)
        src.backup()
        src.commit_rows(2)
        tli = src.new_timeline()
        src.commit_rows(2)
        src.switch_wal()
    return repo, tli


def test_latest_follows_the_promoted_timeline(promoted, settings_factory):
    repo, tli = promoted
    rows, result = count_rows(settings_factory(f"file://{repo}"))
    assert (rows, result.timeline, result.outcome) == (6, tli, "REACHED")


def test_twin_promoted_timeline_without_its_history_file_is_refused(promoted, settings_factory):
    repo, tli = promoted
    copy = Path(f"/tmp/pgr-twin-{os.getpid()}-hist")
    shutil.copytree(repo, copy)
    try:
        (copy / "wal" / f"{tli:08X}.history").unlink()
        with pytest.raises(PreflightError) as err:
            count_rows(settings_factory(f"file://{copy}"))
        assert f"no {tli:08X}.history" in str(err.value)
        assert err.value.result.outcome == "REFUSED_PREFLIGHT"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


# -- the restore_command contract -----------------------------------------------------------
def test_a_late_planned_segment_is_waited_for(pg15, settings_factory):
    late = newest_segment(pg15.repo).name
    delayed = []

    def slow(name):
        if name == late:
            delayed.append(name)
            time.sleep(3)

    rows, result = count_rows(settings_factory(pg15.file_url), Hooks(before_deliver=slow))
    assert set(delayed) == {late}  # replay may ask again for the last segment when it promotes
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")


def _wrapper_pids(root: Path, name: str) -> list[int]:
    """Wrappers of this test run waiting for ``name`` (prefetch runs ahead of replay, so a
    wrapper for an earlier segment may still be exiting when the hook starts)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if (pid.isdigit() and b"restore_wal.sh" in cmd and str(root).encode() in cmd
                    and name.encode() in cmd):
                pids.append(int(pid))
        except OSError:
            pass
    return pids


def test_twin_a_crashed_wrapper_aborts_recovery(pg15, settings_factory, workroot):
    late = newest_segment(pg15.repo).name
    release = threading.Event()
    killed = []

    def hold_and_kill(name):
        if name != late:
            return
        deadline = time.monotonic() + 30
        while not killed and time.monotonic() < deadline:
            for pid in _wrapper_pids(workroot, late):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)
        release.wait(3)  # keep the segment back until PostgreSQL has reacted to the crash

    hooks = Hooks(before_deliver=hold_and_kill)
    try:
        with pytest.raises(RestoreFailed) as err:
            count_rows(settings_factory(pg15.file_url), hooks)
    finally:
        release.set()
    assert killed
    assert err.value.result.outcome == "RESTORE_COMMAND_ABORT"
    assert "terminated by signal 9" in str(err.value)


# -- what the fixtures connect to ----------------------------------------------------------
def test_twin_missing_database_fails_naming_the_option(pg15, settings_factory):
    with pytest.raises(PgRestoreError) as err:
        count_rows(settings_factory(pg15.file_url, "immediate", dbname="no_such_db"))
    message = str(err.value)
    assert "no database 'no_such_db'" in message and "--restore-dbname" in message
    assert "postgres" in message  # the databases that do exist are listed


def test_twin_missing_role_fails_naming_the_option(pg15, settings_factory):
    with pytest.raises(PgRestoreError) as err:
        count_rows(settings_factory(pg15.file_url, "immediate", user="no_such_role"))
    assert "no role 'no_such_role'" in str(err.value) and "--restore-user" in str(err.value)


def test_twin_newest_segment_zeroed_after_a_commit_is_not_reached(pg15, settings_factory):
    """The newest segment's tail zeroed (a short write padded out): replay stops inside it with a
    tidy-looking 'invalid record length … got 0' and never asks for the next segment."""
    from pytest_pgrestore.settings._target import parse_lsn

    repo = copy_repo(pg15, Path(f"/tmp/pgr-twin-{os.getpid()}-zero"))
    try:
        cut = parse_lsn(pg15.commits["c2"][0].lsn)
        newest = newest_segment(repo)
        data = bytearray(newest.read_bytes())
        offset = cut % len(data)
        assert offset > 0, "premise: the cut lies inside the newest segment"
        data[offset:] = bytes(len(data) - offset)
        newest.write_bytes(bytes(data))
        with pytest.raises(RestoreFailed) as err:
            count_rows(settings_factory(f"file://{repo}"))
        assert err.value.result.outcome == "CORRUPT_WAL"
        assert "without reading past it" in str(err.value)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_twin_a_restore_over_its_timeout_is_timeout(pg15, settings_factory):
    """The success twin is test_a_late_planned_segment_is_waited_for (default 6h limit)."""
    late = newest_segment(pg15.repo).name

    def slow(name):
        if name == late:
            time.sleep(6)

    with pytest.raises(RestoreFailed) as err:
        count_rows(settings_factory(pg15.file_url, timeout="3s"), Hooks(before_deliver=slow))
    assert err.value.result.outcome == "TIMEOUT"
    assert "--restore-timeout" in str(err.value)
