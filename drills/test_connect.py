"""Checklist: the restored database accepts connections on its port."""

import psycopg


def test_accepts_tcp_connections_as_the_application_role(restored_postgres, app_dsn):
    with psycopg.connect(app_dsn, connect_timeout=5) as conn:
        user, port = conn.execute("select current_user, current_setting('port')::int").fetchone()
    assert user == "app"
    assert port == restored_postgres.port


def test_recovery_is_over_and_the_target_was_reached(restored_db, restore_result):
    assert restore_result.outcome == "REACHED", restore_result.detail
    assert restored_db.execute("select pg_is_in_recovery()").fetchone()[0] is False
