"""Corruption checks on a restored server: amcheck, a full read, pg_checksums.

* ``amcheck_btree`` — ``bt_index_check`` on every valid B-tree index of every database, with
  ``heapallindexed`` for tables up to a size (it fingerprints the index, then reads the heap);
* ``amcheck_heap`` — ``verify_heapam`` on every table, TOAST followed (amcheck 1.3, PostgreSQL 14+);
* ``full_read`` — ``COPY (SELECT * FROM ONLY t) TO STDOUT`` for every table: every heap page and
  every TOAST value is read (and checksum-verified when checksums are on), as ``pg_dump`` does;
* ``verify_checksums`` — ``pg_checksums --check`` on the cleanly stopped cluster, then a restart on
  the same port and socket (``LocalServer.offline``).

amcheck is used where it is installed; otherwise it is created in a private schema inside a
transaction that is rolled back, so the restored databases are left exactly as they were.  A
check that cannot run here raises :class:`CheckSkipped` with the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CheckSkipped
from ..restore._instance import RestoredInstance

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

__all__ = ["CheckSkipped", "Finding", "Report", "amcheck_btree", "amcheck_heap", "full_read", "verify_checksums"]

_PRIVATE_SCHEMA = "pgrestore_amcheck"
_OUR_DATABASES = ("pgrestore_tpl_", "pgrestore_clone_")  # copies the plugin made of a database
_MAX_SHOWN = 20
_BAD_BLOCK = re.compile(r'checksum verification failed in file "([^"]+)", block (\d+): (.*)')


@dataclass
class Finding:
    database: str
    relation: str  # "index public.users_email_key on public.users"
    error: str

    def __str__(self) -> str:
        return f"{self.relation} (database {self.database}): {self.error}"


@dataclass
class Report:
    check: str
    checked: list[str] = field(default_factory=list)  # one line per database
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.ok:
            lines = [f"{self.check}: no corruption found"]
        else:  # the first line is what JUnit and the short summary show
            lines = [f"{self.check}: {len(self.findings)} problem(s), first: {self.findings[0]}"]
        lines += [f"  {f}" for f in self.findings[1:_MAX_SHOWN]]
        if len(self.findings) > _MAX_SHOWN:
            lines.append(f"  … and {len(self.findings) - _MAX_SHOWN} more")
        lines += [f"  checked {c}" for c in self.checked] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _databases(inst: RestoredInstance, wanted: list[str] | None = None) -> list[str]:
    """Every database that accepts connections (not the plugin's own copies), or ``wanted``."""
    with inst.admin_connect("template1", autocommit=True) as conn:
        names = [r[0] for r in conn.execute("select datname from pg_database where datallowconn order by 1")]
    if wanted:
        missing = [w for w in wanted if w not in names]
        if missing:
            raise CheckSkipped(f"database {', '.join(missing)} is not in the restored cluster "
                               f"(found: {', '.join(names)}); fix corruption.databases")
        return list(wanted)
    return [n for n in names if not n.startswith(_OUR_DATABASES)]


def _error(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag is not None and diag.message_primary else str(exc)).strip()
    detail = diag.message_detail if diag is not None else None
    return f"{text} ({detail})" if detail else text


@contextmanager
def _amcheck(inst: RestoredInstance, db: str, need: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """(connection, schema of amcheck's functions) in a transaction rolled back at the end."""
    from psycopg import sql

    with inst.admin_connect(db) as conn:
        try:
            row = conn.execute("select extnamespace::regnamespace::text from pg_extension "
                               "where extname = 'amcheck'").fetchone()
            if row is None:
                if not conn.execute("select 1 from pg_available_extensions where name = 'amcheck'").fetchone():
                    version = conn.execute("show server_version").fetchone()[0]
                    raise CheckSkipped(f"the amcheck extension is not available on the restored server "
                                       f"(PostgreSQL {version}; pg_available_extensions has no amcheck): install "
                                       f"the contrib modules of the binaries the restore runs with")
                conn.execute(sql.SQL("create schema {}").format(sql.Identifier(_PRIVATE_SCHEMA)))
                conn.execute(sql.SQL("create extension amcheck schema {}").format(sql.Identifier(_PRIVATE_SCHEMA)))
                row = (_PRIVATE_SCHEMA,)
            if not conn.execute("select 1 from pg_proc where proname = %s and pronamespace = %s::regnamespace",
                                [need, row[0]]).fetchone():
                version = conn.execute("select extversion from pg_extension where extname = 'amcheck'").fetchone()
                raise CheckSkipped(f"amcheck {version[0]} on this server has no {need}() "
                                   f"(verify_heapam needs amcheck 1.3, PostgreSQL 14 or later)")
            yield conn, row[0]
        finally:
            conn.rollback()  # the private schema and extension vanish; nothing of ours stays behind


_INDEXES = """
select c.oid, format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname),
       pg_relation_size(t.oid)
  from pg_index i
  join pg_class c on c.oid = i.indexrelid
  join pg_namespace n on n.oid = c.relnamespace
  join pg_class t on t.oid = i.indrelid
  join pg_namespace tn on tn.oid = t.relnamespace
  join pg_am am on am.oid = c.relam
 where am.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready
 order by 2
"""


def amcheck_btree(inst: RestoredInstance, *, databases: list[str] | None = None,
                  heapallindexed_max: int | None = None) -> Report:
    """``bt_index_check`` on every B-tree index; ``heapallindexed`` on tables up to the size given
    (``None``: all, ``0``: none)."""
    import psycopg
    from psycopg import sql

    report = Report("amcheck bt_index_check")
    for db in _databases(inst, databases):
        with _amcheck(inst, db, "bt_index_check") as (conn, schema):
            call = sql.SQL("select {}.bt_index_check(%s::oid::regclass, %s)").format(sql.Identifier(schema))
            indexes = conn.execute(_INDEXES).fetchall()
            full = 0
            for oid, index, table, heap_bytes in indexes:
                heapallindexed = heapallindexed_max is None or heap_bytes <= heapallindexed_max
                full += heapallindexed
                try:
                    with conn.transaction():
                        conn.execute(call, [oid, heapallindexed])
                except psycopg.Error as exc:  # the index (or its table) failed a check
                    report.findings.append(Finding(db, f"index {index} on {table}", _error(exc)))
        report.checked.append(f"{db}: {len(indexes)} B-tree indexes, {full} with heapallindexed")
    if heapallindexed_max:
        report.notes.append(f"heapallindexed only for tables up to {heapallindexed_max >> 20} MB "
                            "(corruption.heapallindexed)")
    return report


_TABLES = """
select c.oid, format('%I.%I', n.nspname, c.relname), c.relkind
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ({kinds}) and c.relpersistence <> 't' and (c.relkind <> 'm' or c.relispopulated)
 order by 2
"""


def amcheck_heap(inst: RestoredInstance, *, databases: list[str] | None = None) -> Report:
    """``verify_heapam`` (TOAST checked) on every table, materialized view and TOAST table."""
    import psycopg
    from psycopg import sql

    report = Report("amcheck verify_heapam")
    for db in _databases(inst, databases):
        with _amcheck(inst, db, "verify_heapam") as (conn, schema):
            call = sql.SQL("select blkno, offnum, attnum, msg from {}.verify_heapam(%s::oid::regclass, false, "
                           "true, 'none')").format(sql.Identifier(schema))
            tables = conn.execute(_TABLES.format(kinds="'r', 'm', 't'")).fetchall()
            for oid, table, _kind in tables:
                try:
                    with conn.transaction():
                        rows = conn.execute(call, [oid]).fetchall()
                except psycopg.Error as exc:  # the page could not even be read
                    report.findings.append(Finding(db, f"table {table}", _error(exc)))
                    continue
                for blkno, offnum, attnum, msg in rows[:5]:
                    where = f"block {blkno}" + (f", item {offnum}" if offnum else "") + \
                        (f", attribute {attnum}" if attnum is not None else "")
                    report.findings.append(Finding(db, f"table {table}", f"{where}: {msg}"))
        report.checked.append(f"{db}: {len(tables)} tables")
    return report


def full_read(inst: RestoredInstance, *, databases: list[str] | None = None) -> Report:
    """Read every row of every table and materialized view, TOAST included, as pg_dump would."""
    import psycopg
    from psycopg import sql

    report = Report("full read")
    for db in _databases(inst, databases):
        rows = nbytes = 0
        with inst.admin_connect(db, autocommit=True) as conn:
            tables = conn.execute(_TABLES.format(kinds="'r', 'm'")).fetchall()
            for _oid, table, _kind in tables:
                copy_sql = sql.SQL("copy (select * from only {}) to stdout").format(sql.SQL(table))
                try:
                    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                        for block in copy:
                            nbytes += len(block)
                            rows += bytes(block).count(b"\n")  # text format: a line a row, newlines escaped
                except psycopg.Error as exc:  # a page or TOAST value could not be read
                    report.findings.append(Finding(db, f"table {table}", _error(exc)))
        report.checked.append(f"{db}: {len(tables)} tables, {rows} rows, {nbytes / 1e6:.1f} MB read")
    return report


def verify_checksums(inst: RestoredInstance, *, timeout: float = 3600.0) -> Report:
    """``pg_checksums --check`` on the cleanly stopped cluster, then the server is started again."""
    server = getattr(inst, "server", None)
    if server is None or getattr(server, "offline", None) is None:
        kind = type(server).__name__ if server is not None else "this"
        raise CheckSkipped(f"pg_checksums --check needs a cleanly stopped cluster, and the {kind} runtime cannot "
                           f"stop and restart its server in place")
    with inst.admin_connect("template1", autocommit=True) as conn:
        if conn.execute("show data_checksums").fetchone()[0] != "on":
            raise CheckSkipped("data checksums are off in this cluster (they are chosen at initdb --data-checksums "
                               "or turned on offline with pg_checksums --enable): nothing for pg_checksums to verify")
    if not server.binaries.tool("pg_checksums").exists():
        raise CheckSkipped(f"no pg_checksums next to the server binaries in {server.binaries.bindir}")
    report = Report("pg_checksums --check")
    with server.offline() as down:
        out = down.run_tool("pg_checksums", ["--check", "-D", str(down.pgdata)], timeout=timeout)
    bad = [(m[1], int(m[2]), m[3]) for m in _BAD_BLOCK.finditer(out.stderr)]
    names = _relations(inst, [path for path, _, _ in bad], str(server.pgdata)) if bad else {}
    for path, block, what in bad:
        db, rel = names.get(path, ("?", "a relation file"))
        report.findings.append(Finding(db, f"{rel} ({_relative(path, str(server.pgdata))}, block {block})", what))
    if out.returncode != 0 and not bad:
        lines = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.strip()]
        report.findings.append(Finding("-", "pg_checksums", " | ".join(lines[-5:]) or f"exit {out.returncode}"))
    stats = dict(re.findall(r"^(Files scanned|Blocks scanned|Bad checksums):\s+(\d+)", out.stdout, re.M))
    report.checked.append(", ".join(f"{k.lower()} {v}" for k, v in stats.items()) or "no statistics printed")
    report.notes.append("the server was stopped cleanly for the check and started again on the same port")
    return report


def _relative(path: str, pgdata: str) -> str:
    return path[len(pgdata):].lstrip("/") if path.startswith(pgdata) else path


def _relations(inst: RestoredInstance, paths: list[str], pgdata: str) -> dict[str, tuple[str, str]]:
    """File paths pg_checksums names → (database, relation), asked of the restarted server."""
    import psycopg

    wanted: dict[tuple[int, int, int], str] = {}
    for path in paths:
        rel = _relative(path, pgdata)
        m = re.fullmatch(r"(?:base/(\d+)|global|pg_tblspc/(\d+)/[^/]+/(\d+))/(\d+)(?:_\w+)?(?:\.\d+)?", rel)
        if m:
            db_oid = int(m[1] or m[3] or 0)
            tablespace = int(m[2]) if m[2] else (1664 if rel.startswith("global/") else 0)
            wanted[(db_oid, tablespace, int(m[4]))] = path
    out: dict[str, tuple[str, str]] = {}
    with inst.admin_connect("template1", autocommit=True) as conn:
        dbs = dict(conn.execute("select oid::int, datname from pg_database").fetchall())
    for (db_oid, tablespace, filenode), path in wanted.items():
        db = dbs.get(db_oid, "template1") if db_oid else "template1"
        try:
            with inst.admin_connect(db, autocommit=True) as conn:
                row = conn.execute("select c.relkind, format('%%I.%%I', n.nspname, c.relname) from pg_class c "
                                   "join pg_namespace n on n.oid = c.relnamespace "
                                   "where c.oid = pg_filenode_relation(%s, %s)", [tablespace, filenode]).fetchone()
        except psycopg.Error as exc:  # the name is decoration on a finding already made
            log.debug("cannot name %s: %s", path, exc)
            continue
        if row:
            kind = "index" if row[0] in ("i", "I") else "table"
            out[path] = (dbs.get(db_oid, "shared catalogs") if db_oid else "shared catalogs", f"{kind} {row[1]}")
    return out
