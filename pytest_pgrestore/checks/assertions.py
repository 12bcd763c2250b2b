"""Helpers for hand-written drills: tables, row counts, key rows — expected vs found.

Two styles, both friendly to pytest's assertion rewriting::

    from pytest_pgrestore.checks.assertions import missing_tables, row_count, row_exists

    def test_schema(restored_db):
        assert missing_tables(restored_db, ["users", "jobs"]) == []     # pytest shows the list
        assert row_count(restored_db, "users") == 50
        assert row_exists(restored_db, "users", email="alice@example.com")

    from pytest_pgrestore.checks.assertions import assert_row_count

    def test_jobs(restored_db):
        assert_row_count(restored_db, "jobs", at_least=80)   # AssertionError: expected …, found …

Every query runs inside ``conn.transaction()`` (a savepoint when a transaction is open), so a
failing check never leaves the drill's connection in an aborted transaction.  The built-in
``--restore-checks`` expectation items use these same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ExpectationFailed

__all__ = [
    "ExpectationFailed",
    "Relation",
    "relation",
    "missing_tables",
    "row_count",
    "row_exists",
    "assert_tables_exist",
    "assert_row_count",
    "assert_row_exists",
    "assert_query_returns_rows",
    "assert_extensions_installed",
    "assert_databases_exist",
    "assert_schemas_exist",
    "assert_fresh",
]

_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table",
          "S": "sequence", "i": "index", "I": "partitioned index", "c": "composite type", "t": "TOAST table"}
_TABLE_KINDS = ("r", "p")
_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # "table", "view", … (pg_class.relkind spelled out)

    @property
    def is_table(self) -> bool:
        return self.kind in ("table", "partitioned table")

    def ident(self):
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def _rows(conn, query, params: Sequence[Any] | None = None) -> list[tuple]:
    with conn.transaction():
        return conn.execute(query, params).fetchall()


def relation(conn, name: str) -> Relation | None:
    """``"users"`` or ``"public.users"`` (SQL quoting rules) → the relation, or None."""
    import psycopg

    try:
        rows = _rows(conn, "select c.oid, n.nspname, c.relname, c.relkind from pg_class c "
                           "join pg_namespace n on n.oid = c.relnamespace where c.oid = to_regclass(%s)", [name])
    except psycopg.errors.InvalidName:  # "a b" or "x.y.z.w": not a name, so not there
        return None
    if not rows:
        return None
    oid, schema, name, kind = rows[0]
    return Relation(int(oid), schema, name, _KINDS.get(kind, kind))


def missing_tables(conn, names: Iterable[str]) -> list[str]:
    """The names (as given) that are not tables in the database the connection points at."""
    return [name for name in names if not ((rel := relation(conn, name)) and rel.is_table)]


def _tables_found(conn, name: str) -> str:
    schema = name.rsplit(".", 1)[0] if "." in name else None
    if schema:
        rows = _rows(conn, "select tablename from pg_tables where schemaname = %s order by 1", [schema.strip('"')])
        where = f"schema {schema.strip(chr(34))}"
    else:
        rows = _rows(conn, "select c.relname from pg_class c where c.relkind in ('r', 'p') "
                           "and pg_table_is_visible(c.oid) and c.relnamespace::regnamespace::text not in "
                           f"{_SYSTEM_SCHEMAS} order by 1")
        where = "the search path"
    names = [r[0] for r in rows]
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f"tables in {where}: {shown or 'none'}"


def _table(conn, name: str) -> Relation:
    rel = relation(conn, name)
    if rel is None or not rel.is_table:
        found = f"a {rel.kind}" if rel else "no such relation"
        raise ExpectationFailed(f"table {name}", expected="a table", found=f"{found} ({_tables_found(conn, name)})")
    return rel


def row_count(conn, table: str, *, limit: int | None = None) -> int:
    """``count(*)`` of ``table``; with ``limit``, stop counting there (cheap "at least" checks)."""
    return _count(conn, _table(conn, table), limit)


def _count(conn, rel: Relation, limit: int | None = None) -> int:
    from psycopg import sql

    if limit is None:
        query = sql.SQL("select count(*) from {}").format(rel.ident())
    else:
        query = sql.SQL("select count(*) from (select from {} limit {}) s").format(rel.ident(), sql.Literal(limit))
    return _rows(conn, query)[0][0]


def _key_condition(conn, rel: Relation, *, pk=None, where: str | None = None, match: dict | None = None):
    """(SQL condition, params, how to describe it)."""
    from psycopg import sql

    if where is not None:
        return sql.SQL(where), [], f"where {where}"
    if pk is not None:
        cols = [r[0] for r in _rows(conn, "select a.attname from pg_index i join pg_attribute a on "
                                          "a.attrelid = i.indrelid and a.attnum = any(i.indkey) where "
                                          "i.indrelid = %s and i.indisprimary "
                                          "order by array_position(i.indkey::int2[], a.attnum)", [rel.oid])]
        if not cols:
            raise ExpectationFailed(f"table {rel}", expected="a primary key to look the row up by",
                                    found="no primary key (use match = {column = value} instead)")
        values = list(pk) if isinstance(pk, (list, tuple)) else [pk]
        if len(values) != len(cols):
            raise ExpectationFailed(f"table {rel}", expected=f"{len(cols)} primary key value(s) for {', '.join(cols)}",
                                    found=f"{len(values)}: {values!r}")
        match = dict(zip(cols, values, strict=True))
        how = "with primary key "
    elif not match:  # was a TypeError on iterating None
        raise TypeError("give pk=, where= or column=value to find the row by")
    else:
        how = "where "
    cond = sql.SQL(" and ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in match)
    return cond, list(match.values()), how + " and ".join(f"{c} = {v!r}" for c, v in match.items())


def row_exists(conn, table: str, *, pk=None, where: str | None = None, **match: Any) -> bool:
    """Is there a row in ``table`` with primary key ``pk``, matching ``where`` (SQL) or ``column=value``?"""
    from psycopg import sql

    rel = _table(conn, table)
    cond, params, _ = _key_condition(conn, rel, pk=pk, where=where, match=match or None)
    query = sql.SQL("select exists (select 1 from {} where {})").format(rel.ident(), cond)
    return bool(_rows(conn, query, params)[0][0])


def assert_tables_exist(conn, *names: str) -> None:
    for name in names:
        _table(conn, name)


def assert_row_count(conn, table: str, *, at_least: int | None = None, exactly: int | None = None) -> int:
    """The count (exact, or capped at ``at_least`` when that is all that is asked)."""
    if (at_least is None) == (exactly is None):
        raise TypeError("give exactly one of at_least= or exactly=")
    rel = _table(conn, table)
    if exactly is not None:
        n = _count(conn, rel)
        if n != exactly:
            raise ExpectationFailed(f"table {rel}", expected=f"exactly {exactly} rows", found=str(n))
        return n
    assert at_least is not None  # exactly one of the two is given (checked above)
    n = _count(conn, rel, limit=at_least)
    if n < at_least:
        raise ExpectationFailed(f"table {rel}", expected=f"at least {at_least} rows", found=str(n))
    return n


def assert_row_exists(conn, table: str, *, pk=None, where: str | None = None, **match: Any) -> None:
    from psycopg import sql

    rel = _table(conn, table)
    cond, params, how = _key_condition(conn, rel, pk=pk, where=where, match=match or None)
    query = sql.SQL("select exists (select 1 from {} where {})").format(rel.ident(), cond)
    if not _rows(conn, query, params)[0][0]:
        total = _count(conn, rel)
        raise ExpectationFailed(f"table {rel}", expected=f"a row {how}", found=f"none among its {total} rows")


def assert_query_returns_rows(conn, query: str) -> None:
    """``query`` returns at least one row, and its first value is not false or NULL."""
    rows = _rows(conn, query)
    if not rows:
        raise ExpectationFailed(f"query {' '.join(query.split())}", expected="at least one row", found="none")
    if rows[0] and rows[0][0] in (False, None):
        raise ExpectationFailed(f"query {' '.join(query.split())}", expected="a true first value",
                                found=repr(rows[0][0]))


def _assert_names(conn, kind: str, names: Iterable[str], query: str, where: str) -> None:
    present = [r[0] for r in _rows(conn, query)]
    missing = [n for n in names if n not in present]
    if missing:
        raise ExpectationFailed(f"{kind} {', '.join(missing)}", expected=f"to exist {where}".rstrip(),
                                found=f"{kind}s: {', '.join(present) or 'none'}")


def assert_extensions_installed(conn, *names: str) -> None:
    db = _rows(conn, "select current_database()")[0][0]
    present = {r[0]: r[1] for r in _rows(conn, "select extname, extversion from pg_extension")}
    missing = [n for n in names if n not in present]
    if missing:
        available = {r[0] for r in _rows(conn, "select name from pg_available_extensions where name = any(%s)",
                                         [missing])}
        notes = "; ".join(f"{n} {'is available to CREATE EXTENSION' if n in available else 'is not even available'}"
                          f" on this server" for n in missing)
        raise ExpectationFailed(f"extension {', '.join(missing)}", expected=f"installed in database {db}",
                                found=f"installed: {', '.join(sorted(present)) or 'none'} ({notes})")


def assert_databases_exist(conn, *names: str) -> None:
    _assert_names(conn, "database", names, "select datname from pg_database order by 1", "")


def assert_schemas_exist(conn, *names: str) -> None:
    db = _rows(conn, "select current_database()")[0][0]
    _assert_names(conn, "schema", names, "select nspname from pg_namespace where nspname not like 'pg\\_%%' "
                  "and nspname <> 'information_schema' order by 1", f"in database {db}")


def assert_fresh(conn, table: str, column: str, *, within: float | timedelta, reference: datetime,
                 reference_label: str = "the reference time") -> datetime:
    """The newest ``table.column`` is at most ``within`` older than ``reference``; returns it."""
    from psycopg import sql

    from .._fmt import human_duration

    rel = _table(conn, table)
    limit = within if isinstance(within, timedelta) else timedelta(seconds=within)
    newest = _rows(conn, sql.SQL("select max({}) from {}").format(sql.Identifier(column), rel.ident()))[0][0]
    what = f"newest {rel}.{column}"
    expected = f"within {human_duration(limit.total_seconds())} before {reference.isoformat()} ({reference_label})"
    if newest is None:
        raise ExpectationFailed(what, expected=expected, found="no value (the table is empty or the column NULL)")
    if isinstance(newest, datetime) and newest.tzinfo is None:
        newest = newest.replace(tzinfo=timezone.utc)  # timestamp without time zone: read as UTC
    if not isinstance(newest, datetime):
        raise ExpectationFailed(what, expected="a timestamp column", found=type(newest).__name__)
    lag = reference - newest
    if lag > limit:
        raise ExpectationFailed(what, expected=expected,
                                found=f"{newest.isoformat()}, {human_duration(lag.total_seconds())} older")
    return newest
