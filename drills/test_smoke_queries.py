"""Checklist: smoke queries (counts, key rows) return what production holds."""

import pytest
from conftest import EXACT_COUNTS, KEY_ROWS, MIN_COUNTS
from psycopg import sql


@pytest.mark.parametrize("table,count", sorted(EXACT_COUNTS.items()))
def test_exact_row_counts(restored_db, table, count):
    (n,) = restored_db.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()
    assert n == count


@pytest.mark.parametrize("table,minimum", sorted(MIN_COUNTS.items()))
def test_minimum_row_counts(restored_db, table, minimum):
    (n,) = restored_db.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(table))).fetchone()
    assert n >= minimum


@pytest.mark.parametrize("table,where", KEY_ROWS)
def test_key_rows_exist(restored_db, table, where):
    query = sql.SQL("select exists (select 1 from {} where {})").format(sql.Identifier(table), sql.SQL(where))
    assert restored_db.execute(query).fetchone()[0], f"no row in {table} where {where}"


def test_referential_integrity_holds(restored_db):
    (orphans,) = restored_db.execute(
        "select count(*) from jobs j left join models m on m.id = j.model_id where m.id is null"
    ).fetchone()
    assert orphans == 0
