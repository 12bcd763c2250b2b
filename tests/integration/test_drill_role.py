"""Least privilege for drills (issue 18): drills connect as a non-superuser role of the harness's.

A real PostgreSQL 15 source is backed up with a table under FORCE ROW LEVEL SECURITY, a schema
and a database of its own (PUBLIC's CONNECT revoked), and a production role that is named like
the drill role and is a superuser; the backup is restored once for the module.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.restore._instance import DRILL_ROLE
from pytest_pgrestore.restore._manager import RestoreManager
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

ROWS, VISIBLE = 10, 3


@pytest.fixture(scope="module")
def backup_with_rls(workroot):
    root = workroot / "drill-role"
    root.mkdir()
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with src.connect() as conn:
            conn.execute("CREATE ROLE owner_role NOLOGIN")
            conn.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-prod-pw'")
            # production has a role of the drill role's name, and a superuser at that
            conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN PASSWORD 'prod-drill-pw'").format(
                sql.Identifier(DRILL_ROLE)))
            conn.execute("CREATE SCHEMA app AUTHORIZATION owner_role")
            conn.execute("CREATE TABLE app.secrets (id int, visible bool)")
            conn.execute("ALTER TABLE app.secrets OWNER TO owner_role")
            conn.execute(f"INSERT INTO app.secrets SELECT i, i <= {VISIBLE} FROM generate_series(1, {ROWS}) i")
            conn.execute("ALTER TABLE app.secrets ENABLE ROW LEVEL SECURITY")
            conn.execute("ALTER TABLE app.secrets FORCE ROW LEVEL SECURITY")
            conn.execute("CREATE POLICY only_visible ON app.secrets FOR SELECT USING (visible)")
            conn.execute("GRANT USAGE ON SCHEMA app TO reader")
            conn.execute("GRANT SELECT ON app.secrets TO reader")
            conn.execute("CREATE DATABASE other")
            conn.execute("REVOKE CONNECT ON DATABASE other FROM PUBLIC")
        with psycopg.connect(make_conninfo(src.dsn, dbname="other"), autocommit=True) as conn:
            conn.execute("CREATE TABLE elsewhere AS SELECT generate_series(1, 5) AS n")
        src.commit_rows(1)
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo"


@pytest.fixture(scope="module")
def restored(backup_with_rls, workroot):
    from pytest_pgrestore.settings._options import resolve_settings

    settings = resolve_settings(cli={"source": f"file://{backup_with_rls}", "workdir": str(workroot / "runs")},
                                env={}, ini={})
    with Restorer(settings).restore() as inst:
        yield inst


def test_the_drill_connection_is_not_a_superuser_and_cannot_reach_the_os(restored):
    with psycopg.connect(restored.dsn, autocommit=True) as conn:
        user, superuser = conn.execute(
            "select current_user, rolsuper from pg_roles where rolname = current_user").fetchone()
        assert user == restored.result.evidence["drill_role"] and superuser is False
        assert restored.result.evidence["drill_superuser"] is False
        for role in ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files"):
            assert conn.execute("select pg_has_role(current_user, %s, 'MEMBER')", (role,)).fetchone()[0] is False
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("COPY (select 1) TO PROGRAM 'true'")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("select pg_read_file('/etc/passwd')")
        # ... yet it reads the data, and the settings a superuser would see
        assert conn.execute("select count(*) from t").fetchone()[0] == 2
        assert conn.execute("show shared_preload_libraries").fetchone()[0] == ""


def test_twin_the_harness_admin_connection_is_the_superuser(restored):
    """The same two statements succeed for the harness's own role: the test above can fail."""
    with restored.admin_connect(autocommit=True) as conn:
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0] is True
        assert "root:" in conn.execute("select pg_read_file('/etc/passwd')").fetchone()[0]


def test_the_drill_role_counts_every_row_through_row_level_security(restored):
    with psycopg.connect(restored.dsn) as conn:
        assert conn.execute("select count(*) from app.secrets").fetchone()[0] == ROWS


def test_twin_a_production_role_without_bypassrls_sees_fewer_rows(restored):
    with psycopg.connect(restored.dsn_for(user="reader")) as conn:
        assert conn.execute("select count(*) from app.secrets").fetchone()[0] == VISIBLE


def test_the_drill_role_connects_to_a_database_whose_public_connect_was_revoked(restored):
    with psycopg.connect(restored.dsn_for(dbname="other")) as conn:
        assert conn.execute("select count(*) from elsewhere").fetchone()[0] == 5
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):  # the twin
        psycopg.connect(restored.dsn_for(user="reader", dbname="other")).close()


def test_a_production_role_named_like_the_drill_role_is_not_reused(restored):
    role = restored.result.evidence["drill_role"]
    assert role != DRILL_ROLE and role.startswith(DRILL_ROLE + "_")
    with restored.admin_connect(autocommit=True) as conn:  # production's role is still there, untouched
        assert conn.execute("select rolsuper from pg_roles where rolname = %s", (DRILL_ROLE,)).fetchone()[0]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(make_conninfo(host=restored.host, port=restored.port, user=DRILL_ROLE,
                                      password="prod-drill-pw", dbname="postgres")).close()


def test_the_drill_role_writes_only_in_a_writable_clone(restored):
    manager = RestoreManager()
    name = manager.clone_db(restored)
    try:
        with psycopg.connect(restored.dsn_for(dbname=name)) as conn:
            assert conn.execute("select current_user").fetchone()[0] == restored.drill_user
            conn.execute("insert into t (value) values ('written by the drill role')")
            conn.execute("create table scratch (n int)")  # CREATE in the clone's public schema too
            conn.commit()
            assert conn.execute("select count(*) from t").fetchone()[0] == 3
        # twin: in the drilled database itself, with no read-only setting, the same insert is refused
        with psycopg.connect(restored.dsn) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute("insert into t (value) values ('not here')")
    finally:
        manager.drop_db(restored, name)


def test_before_14_the_role_reads_through_per_schema_grants(restored):
    """Only PostgreSQL 15 runs here: the path of 13 and older is forced on it (unit tests choose
    it by server_version_num)."""
    role = restored.create_drill_role(predefined_roles=False)
    assert role.startswith(DRILL_ROLE + "_")
    with restored.admin_connect(autocommit=True) as conn:
        assert conn.execute("select pg_has_role(%s, 'pg_read_all_data', 'MEMBER')", (role,)).fetchone()[0] is False
    with psycopg.connect(restored.dsn_for(user=role), autocommit=True) as conn:
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0] is False
        assert conn.execute("select count(*) from app.secrets").fetchone()[0] == ROWS  # BYPASSRLS too
        assert conn.execute("select count(*) from t").fetchone()[0] == 2
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("COPY (select 1) TO PROGRAM 'true'")
    with psycopg.connect(restored.dsn_for(user=role, dbname="other")) as conn:
        assert conn.execute("select count(*) from elsewhere").fetchone()[0] == 5
    # twin: a table made after the grants is not readable: the access came from those grants
    with restored.admin_connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE app.later (n int)")
    with psycopg.connect(restored.dsn_for(user=role)) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute("select count(*) from app.later")
