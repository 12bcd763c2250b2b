"""Production's passwords do not open the restored copy (issue 18 item 3).

A real PostgreSQL 15 source has an application role with a password; its backup is restored.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

PRODUCTION_PASSWORD = "prod-secret-pw-42"


@pytest.fixture(scope="module")
def with_app_role(workroot):
    root = workroot / "prod-passwords"
    root.mkdir()
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with src.connect() as conn:
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{PRODUCTION_PASSWORD}'")
            conn.execute("CREATE ROLE reporting LOGIN PASSWORD 'another-prod-pw'")
        src.commit_rows(1)
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo"


def test_production_passwords_no_longer_log_in(with_app_role, settings_factory):
    with Restorer(settings_factory(f"file://{with_app_role}")).restore() as inst:
        production = make_conninfo(host=inst.host, port=inst.port, user="app", password=PRODUCTION_PASSWORD,
                                   dbname="postgres")
        with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "app"'):
            psycopg.connect(production, connect_timeout=5).close()
        assert inst.result.evidence["production_passwords"] == \
            "cleared for the life of the copy: 2 role(s) had one"
        # twin: the role a drill asks for gets its per-run password, and that one logs in
        with psycopg.connect(inst.dsn_for(user="app")) as conn:
            assert conn.execute("select current_user").fetchone()[0] == "app"
        # ... and the default drill connection still works after the sweep of passwords
        with psycopg.connect(inst.dsn) as conn:
            conn.execute("select 1")


def test_a_non_superuser_restore_user_still_gets_a_clean_copy(with_app_role, settings_factory):
    """--restore-user app (no superuser): the drills connect as app, yet the harness's own work —
    clearing production's passwords — runs as the cluster's bootstrap superuser, and the evidence
    says the drills did not run as a superuser.  (Before, every admin connection used --restore-user
    and the restore failed with 'permission denied'.)"""
    with Restorer(settings_factory(f"file://{with_app_role}", user="app")).restore() as inst:
        with psycopg.connect(inst.dsn) as conn:
            assert conn.execute("select current_user, rolsuper from pg_roles where rolname = current_user"
                                ).fetchone() == ("app", False)
        with inst.admin_connect("template1") as conn:
            assert conn.execute("select current_user, rolsuper from pg_roles where rolname = current_user"
                                ).fetchone() == ("postgres", True)
        assert inst.result.evidence["drill_role"] == "app" and inst.result.evidence["drill_superuser"] is False
        production = make_conninfo(host=inst.host, port=inst.port, user="reporting", password="another-prod-pw",
                                   dbname="postgres")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(production, connect_timeout=5).close()
