"""shared_preload_libraries: off by default and said so; --restore-preload keeps what a drill needs.

A real PostgreSQL 15 source preloads pg_stat_statements and created the extension before its
backup (issue 16 item 6).
"""

from __future__ import annotations

import io
import tarfile

import psycopg
import pytest
from it_support import our_postgres_processes, run_dirs

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.errors import RestoreFailed
from pytest_pgrestore.restore._manager import key_for
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def preloading(workroot):
    """A backup whose postgresql.conf preloads pg_stat_statements, with the extension created."""
    root = workroot / "preload"
    root.mkdir()
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with (src.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'  # production's\n")
        src.stop()
        src.start()
        with src.connect() as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        src.commit_rows(1)
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo"


def _restore(settings_factory, repo, **cli):
    return Restorer(settings_factory(f"file://{repo}", **cli)).restore()


def test_dropped_by_default_and_said(preloading, settings_factory):
    with _restore(settings_factory, preloading) as inst:
        preload = inst.result.evidence["preload"]
        assert preload["configured"] == ["pg_stat_statements"] and preload["configured_in"] == "postgresql.conf"
        assert preload["kept"] == [] and preload["dropped"] == ["pg_stat_statements"]
        assert "preloads pg_stat_statements" in preload["summary"]
        assert "dropped: pg_stat_statements (--restore-preload=pg_stat_statements keeps them)" in preload["summary"]
        with psycopg.connect(inst.dsn) as conn:
            assert conn.execute("show shared_preload_libraries").fetchone()[0] == ""
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="shared_preload_libraries"):
                conn.execute("select count(*) from pg_stat_statements")


def test_kept_with_the_option_and_queryable(preloading, settings_factory):
    with _restore(settings_factory, preloading, preload="pg_stat_statements") as inst:
        preload = inst.result.evidence["preload"]
        assert preload["kept"] == ["pg_stat_statements"] and preload["dropped"] == []
        with psycopg.connect(inst.dsn) as conn:
            assert conn.execute("show shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
            conn.execute("select count(*) from pg_stat_statements").fetchone()


def test_twin_a_library_the_binaries_lack_fails_naming_it(preloading, settings_factory, workroot):
    with pytest.raises(RestoreFailed) as err:
        with _restore(settings_factory, preloading, preload="pg_stat_statements,no_such_lib"):
            pass
    message = str(err.value)
    assert err.value.result.outcome == "START_FAILED"
    assert "--restore-preload names no_such_lib, which PostgreSQL 15 at" in message
    assert "pg_stat_statements" not in message.split("fix:")[0].split("names")[1].split(",")[0]
    assert run_dirs(workroot) == [] and our_postgres_processes(workroot) == []


def test_unknown_where_the_configuration_lives_outside_the_data_directory(preloading, settings_factory, workroot):
    """A Debian/Ubuntu primary keeps postgresql.conf in /etc/postgresql: not in its backup."""
    import shutil

    repo = workroot / "preload-debian"
    shutil.copytree(preloading, repo)
    (base,) = (repo / "basebackups").glob("*/base.tar")
    with tarfile.open(base) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
    assert any(m.name == "postgresql.conf" for m, _ in members), "premise: the backup carries postgresql.conf"
    with tarfile.open(base, "w", format=tarfile.PAX_FORMAT) as out:
        for member, data in members:
            if member.name != "postgresql.conf":
                out.addfile(member, io.BytesIO(data) if data is not None else None)
    for manifest in base.parent.glob("backup_manifest*"):  # it would list the file (pg_verifybackup)
        manifest.unlink()
    with _restore(settings_factory, repo) as inst:
        preload = inst.result.evidence["preload"]
        assert preload["configured"] is None and preload["dropped"] is None
        assert "shared_preload_libraries is unknown (postgresql.conf is not in the data directory" in preload["summary"]


def test_the_preload_list_makes_a_different_restore(settings_factory, preloading):
    plain = settings_factory(f"file://{preloading}")
    kept = settings_factory(f"file://{preloading}", preload="pg_stat_statements")
    other_user = settings_factory(f"file://{preloading}", user="app")
    assert len({key_for(plain), key_for(kept), key_for(other_user)}) == 3
    assert key_for(kept).label == "restore[latest;preload=pg_stat_statements]"
    assert key_for(plain) == key_for(settings_factory(f"file://{preloading}", preload="none"))
