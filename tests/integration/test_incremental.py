"""PostgreSQL 17+ incremental backups that were not combined are refused before any download."""

from __future__ import annotations

import subprocess
import time

import pytest

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.errors import PreflightError
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def incremental_repo(workroot):
    root = workroot / "incr18"
    root.mkdir()
    repo = root / "repo"
    with SourceCluster(root / "src", repo=repo, major=18) as src:
        with src.connect() as conn:
            conn.execute("ALTER SYSTEM SET summarize_wal = on")
            conn.execute("SELECT pg_reload_conf()")
        src.commit_rows(1)
        full = src.backup("20261101T000000")
        src.commit_rows(1)
        src.switch_wal()
        time.sleep(1)  # let the WAL summarizer catch up with the switch
        out = repo / "basebackups" / "20261102T000000"
        subprocess.run(["runuser", "-u", "postgres", "--", str(src.bindir / "pg_basebackup"), "-d", src.dsn,
                        "-Ft", "-Xnone", "-D", str(out), "--incremental", str(full.path / "backup_manifest")],
                       check=True, capture_output=True)
        src.commit_rows(1)  # a switch with nothing written since the backup would archive nothing
        src.switch_wal()
    return repo


def test_full_backup_of_the_same_archive_restores(incremental_repo, settings_factory):
    settings = settings_factory(f"file://{incremental_repo}", "backup:20261101T000000")
    with Restorer(settings).restore() as inst:
        assert inst.result.outcome == "REACHED"


def test_twin_uncombined_incremental_backup_is_refused_before_download(incremental_repo, settings_factory):
    with pytest.raises(PreflightError) as err:
        with Restorer(settings_factory(f"file://{incremental_repo}", "immediate")).restore():
            pass
    assert "incremental backup that was not combined" in str(err.value)
    assert "pg_combinebackup" in str(err.value)
    assert err.value.result.bytes_fetched == 0
