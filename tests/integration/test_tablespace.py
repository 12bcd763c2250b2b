"""Tablespaces: each goes to <run dir>/tablespaces/<oid>, never to production's path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ts_source(workroot):
    root = workroot / "tablespace"
    root.mkdir()
    location = root / "production-tablespace"
    location.mkdir()
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(location, pw.pw_uid, pw.pw_gid)
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with src.connect() as conn:
            conn.execute(f"CREATE TABLESPACE extra LOCATION '{location}'")
            conn.execute("CREATE TABLE big TABLESPACE extra AS SELECT g FROM generate_series(1, 5000) g")
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo", location


def test_tablespace_is_restored_under_the_run_dir(ts_source, settings_factory):
    repo, location = ts_source
    before = sorted(p.name for p in location.rglob("*"))
    with Restorer(settings_factory(f"file://{repo}")).restore() as inst:
        with inst.connect() as conn:
            assert conn.execute("select count(*) from big").fetchone()[0] == 5000
            (path,) = conn.execute("select pg_tablespace_location(oid) from pg_tablespace "
                                   "where spcname = 'extra'").fetchone()
        assert Path(path).resolve().is_relative_to(inst.run_dir.resolve())
        assert "tablespace_map" in inst.result.evidence["kept_from_production"]
    assert sorted(p.name for p in location.rglob("*")) == before  # production's path untouched


def test_twin_missing_tablespace_tar_fails_the_manifest_check(ts_source, settings_factory):
    repo, _ = ts_source
    copy = Path(f"/tmp/pgr-ts-{os.getpid()}")
    shutil.copytree(repo, copy)
    try:
        (ts_tar,) = copy.glob("basebackups/*/[0-9]*.tar")
        ts_tar.unlink()
        with pytest.raises(CorruptBackup) as err:
            with Restorer(settings_factory(f"file://{copy}")).restore():
                pass
        # backup_manifest lists files under pg_tblspc/<oid>/: refused before download, naming the tar
        assert f"{ts_tar.name}" in str(err.value) and "is incomplete" in str(err.value)
        assert err.value.result.bytes_fetched == 0
    finally:
        shutil.rmtree(copy, ignore_errors=True)
