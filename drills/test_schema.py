"""Checklist: the expected tables exist."""

from conftest import EXPECTED_TABLES


def test_expected_tables_exist(restored_db):
    rows = restored_db.execute(
        "select table_name from information_schema.tables where table_schema = 'public'"
    ).fetchall()
    missing = EXPECTED_TABLES - {name for (name,) in rows}
    assert not missing, f"tables missing from the restored copy: {sorted(missing)}"
