"""Declarative checks: parse ``[tool.pgrestore]`` or a drill module's ``PGRESTORE`` (pure).

One declaration has up to three tables, each turned into one :class:`Check` per expectation
(so JUnit and the HTML report list them one by one)::

    [tool.pgrestore.expect]        tables, row counts, key rows, extensions, freshness
    [tool.pgrestore.corruption]    amcheck, full read, pg_checksums (defaults when absent)
    [tool.pgrestore.hygiene]       encryption, public access, backup age and count, WAL continuity

A drill module declares the same mapping as ``PGRESTORE = {"expect": {...}}``; its checks run
against that module's restore (its ``restore_target`` marker).  Every error names the file and
the key, lists what is accepted and says how to fix it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..settings._options import parse_duration

__all__ = ["Check", "parse_declaration", "load_pyproject", "parse_size", "ENCRYPTION_LEVELS"]

#: at-rest protection, weakest first; client-side encryption (by the backup tool) beats them all
ENCRYPTION_LEVELS = ("none", "sse-s3", "sse-kms")
_SIZE = re.compile(r"\s*([0-9]+)\s*(B|kB|KB|MB|GB|TB)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}
_SECTIONS = {"expect": "expectations", "corruption": "corruption", "hygiene": "hygiene"}
_EXPECT_KEYS = ("databases", "schemas", "tables", "extensions", "min_rows", "exact_rows", "key_rows", "fresh")
_KEY_ROW_KEYS = ("table", "pk", "match", "where", "sql", "name")
_FRESH_KEYS = ("table", "column", "within", "name")
CORRUPTION_DEFAULTS: dict[str, Any] = {"amcheck": True, "heapallindexed": "1GB", "heap": True, "full_read": True,
                                       "checksums": True, "databases": []}
HYGIENE_DEFAULTS: dict[str, Any] = {"encryption": "sse-s3", "client_side_encryption": False,
                                    "public_access_block": True, "policy_not_public": True,
                                    "min_backups": 1, "max_age": None, "wal_continuity": True}


@dataclass(frozen=True)
class Check:
    """One built-in check, later one test item: ``name`` is its readable id (``table[users]``)."""

    family: str  # "expectations" | "corruption" | "hygiene"
    kind: str  # "table", "rows", "key_row", …, "amcheck_btree", …, "bucket_encryption", …
    name: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    origin: str = ""  # "drills/pyproject.toml [tool.pgrestore.expect] tables"


def load_pyproject(path: Path) -> Mapping[str, Any] | None:
    """The ``[tool.pgrestore]`` table of ``path``, or None when it has none."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10
        import tomli as tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", fix="fix the TOML syntax") from exc
    table = data.get("tool", {}).get("pgrestore")
    if table is not None and not isinstance(table, Mapping):
        raise UsageError(f"[tool.pgrestore] in {path} is not a table", fix="write [tool.pgrestore.expect] etc.")
    return table


def parse_declaration(data: Mapping[str, Any], *, origin: str, families: tuple[str, ...],
                      defaults: bool = True) -> list[Check]:
    """The checks of one declaration, for the enabled ``families`` only (each section validated anyway).

    With ``defaults`` (a project's declaration) a missing corruption or hygiene section means its
    defaults; without (a drill module's), only the sections it declares give checks.
    """
    if not isinstance(data, Mapping):
        raise _error(origin, "", f"expected a table (dict), got {type(data).__name__}",
                     "expect, corruption, hygiene", "e.g. PGRESTORE = {'expect': {'tables': ['users']}}")
    _known(data, _SECTIONS, origin, "")
    checks: list[Check] = []
    expect = _table(data, "expect", origin, "")
    corruption = {**CORRUPTION_DEFAULTS, **_table(data, "corruption", origin, "", CORRUPTION_DEFAULTS)}
    hygiene = {**HYGIENE_DEFAULTS, **_table(data, "hygiene", origin, "", HYGIENE_DEFAULTS)}
    parsed = {"expectations": _expectations(expect, f"{origin} expect"),
              "corruption": _corruption(corruption, f"{origin} corruption"),
              "hygiene": _hygiene(hygiene, f"{origin} hygiene")}
    for section, family in _SECTIONS.items():
        if family in families and (defaults or section in data):
            checks += parsed[family]
    return _unique(checks)


# -- expect -------------------------------------------------------------------------------
def _expectations(data: Mapping[str, Any], origin: str) -> list[Check]:
    _known(data, _EXPECT_KEYS, origin, "")
    out = []
    for key, kind in (("databases", "database"), ("schemas", "schema"), ("tables", "table"),
                      ("extensions", "extension")):
        for name in _names(data.get(key, []), origin, key):
            out.append(Check("expectations", kind, f"{kind}[{name}]", {"name": name}, f"{origin} {key}"))
    for key, op in (("exact_rows", "=="), ("min_rows", ">=")):
        counts = data.get(key, {})
        if not isinstance(counts, Mapping):
            raise _error(origin, key, "expected a table of table name = count", "{ users = 50 }",
                         f"e.g. {key} = {{ users = 50 }}")
        for table, count in counts.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise _error(origin, f"{key}.{table}", f"expected a row count >= 0, got {count!r}",
                             "an integer", f"e.g. {table} = 50")
            params = {"table": table, ("exactly" if op == "==" else "at_least"): count}
            out.append(Check("expectations", "rows", f"rows[{table}{op}{count}]", params, f"{origin} {key}"))
    for i, row in enumerate(_list_of_tables(data.get("key_rows", []), origin, "key_rows")):
        out.append(_key_row(row, origin, f"key_rows[{i}]"))
    for i, fresh in enumerate(_list_of_tables(data.get("fresh", []), origin, "fresh")):
        out.append(_fresh(fresh, origin, f"fresh[{i}]"))
    return out


def _key_row(row: Mapping[str, Any], origin: str, key: str) -> Check:
    _known(row, _KEY_ROW_KEYS, origin, key)
    ways = [w for w in ("pk", "match", "where", "sql") if w in row]
    if len(ways) != 1:
        raise _error(origin, key, f"give exactly one of pk, match, where, sql (got {', '.join(ways) or 'none'})",
                     "pk = 1 | match = { email = '…' } | where = \"…\" | sql = \"select …\"",
                     "e.g. { table = 'users', match = { email = 'alice@example.com' } }")
    way = ways[0]
    table = row.get("table")
    if way != "sql" and not (isinstance(table, str) and table.strip()):
        raise _error(origin, key, f"{way} needs table = NAME", "a table name", "e.g. table = 'users'")
    value = row[way]
    if way == "match" and not (isinstance(value, Mapping) and value):
        raise _error(origin, f"{key}.match", "expected a table of column = value", "{ col = value }",
                     "e.g. match = { email = 'alice@example.com' }")
    if way in ("where", "sql") and not (isinstance(value, str) and value.strip()):
        raise _error(origin, f"{key}.{way}", "expected a non-empty SQL string", "SQL text", "quote it")
    if way == "sql" and "name" not in row:
        raise _error(origin, key, "a sql key row needs name = '…' (its item id)", "a short label",
                     "e.g. name = 'every model has a job'")
    label = row.get("name") or _describe_row(table, way, value)
    return Check("expectations", "key_row", f"key_row[{label}]", {"table": table, way: value},
                 f"{origin} {key}")


def _describe_row(table: str | None, way: str, value: Any) -> str:  # no table for way "sql"
    if way == "pk":
        return f"{table} pk={','.join(map(str, value)) if isinstance(value, list) else value}"
    if way == "match":
        return f"{table} " + " ".join(f"{k}={v}" for k, v in value.items())
    return f"{table}: {' '.join(value.split())}"


def _fresh(data: Mapping[str, Any], origin: str, key: str) -> Check:
    _known(data, _FRESH_KEYS, origin, key)
    for part in ("table", "column", "within"):
        if not isinstance(data.get(part), str) or not data[part].strip():
            raise _error(origin, f"{key}.{part}", f"{part} is required", "table, column, within",
                         "e.g. { table = 'jobs', column = 'created_at', within = '26h' }")
    within = parse_duration(data["within"], origin=f"{origin} {key}.within")
    label = data.get("name") or f"{data['table']}.{data['column']}<={data['within'].strip()}"
    return Check("expectations", "fresh", f"fresh[{label}]",
                 {"table": data["table"], "column": data["column"], "within": within}, f"{origin} {key}")


# -- corruption ---------------------------------------------------------------------------
def _corruption(data: Mapping[str, Any], origin: str) -> list[Check]:
    for key in ("amcheck", "heap", "full_read", "checksums"):
        _bool(data, key, origin)
    hai = data["heapallindexed"]
    if isinstance(hai, bool):
        limit = None if hai else 0  # None: no limit
    elif isinstance(hai, str):
        limit = parse_size(hai, origin=f"{origin} heapallindexed")
    else:
        raise _error(origin, "heapallindexed", f"expected true, false or a size, got {hai!r}",
                     "true | false | a table size such as '1GB'", "e.g. heapallindexed = '1GB'")
    databases = _names(data["databases"], origin, "databases")
    common = {"databases": databases}
    out = []
    if data["amcheck"]:
        out.append(Check("corruption", "amcheck_btree", "amcheck[btree]", {**common, "heapallindexed_max": limit},
                         f"{origin} amcheck"))
    if data["heap"]:
        out.append(Check("corruption", "amcheck_heap", "amcheck[heap]", common, f"{origin} heap"))
    if data["full_read"]:
        out.append(Check("corruption", "full_read", "full_read", common, f"{origin} full_read"))
    if data["checksums"]:
        out.append(Check("corruption", "pg_checksums", "pg_checksums", {}, f"{origin} checksums"))
    return out


def parse_size(text: str, *, origin: str) -> int:
    """``"1GB"`` → ``1073741824`` (PostgreSQL's units: powers of 1024)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise UsageError(f"invalid size {text!r} (from {origin})", checked="accepted: bytes or N kB|MB|GB|TB",
                         fix="e.g. 512MB or 1GB")
    return int(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]


# -- hygiene ------------------------------------------------------------------------------
def _hygiene(data: Mapping[str, Any], origin: str) -> list[Check]:
    for key in ("client_side_encryption", "public_access_block", "policy_not_public", "wal_continuity"):
        _bool(data, key, origin)
    level = data["encryption"]
    if level not in ENCRYPTION_LEVELS:
        raise _error(origin, "encryption", f"unknown level {level!r}", " | ".join(ENCRYPTION_LEVELS),
                     "sse-s3: AES256 or KMS; sse-kms: KMS only; none: do not check")
    minimum = data["min_backups"]
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise _error(origin, "min_backups", f"expected a count >= 0, got {minimum!r}", "an integer",
                     "e.g. min_backups = 3")
    out = []
    if level != "none":
        out.append(Check("hygiene", "bucket_encryption", "bucket_encryption", {"level": level},
                         f"{origin} encryption"))
        out.append(Check("hygiene", "object_encryption", "object_encryption", {"level": level},
                         f"{origin} encryption"))
    if data["client_side_encryption"]:
        out.append(Check("hygiene", "client_side_encryption", "client_side_encryption", {},
                         f"{origin} client_side_encryption"))
    if data["public_access_block"]:
        out.append(Check("hygiene", "public_access_block", "public_access_block", {},
                         f"{origin} public_access_block"))
    if data["policy_not_public"]:
        out.append(Check("hygiene", "bucket_policy", "bucket_policy[not public]", {},
                         f"{origin} policy_not_public"))
    if minimum:
        out.append(Check("hygiene", "backup_count", f"backups[>={minimum}]", {"min_backups": minimum},
                         f"{origin} min_backups"))
    if data["max_age"] is not None:
        text = data["max_age"]
        if not isinstance(text, str):
            raise _error(origin, "max_age", f"expected a duration string, got {text!r}", "e.g. '26h'", "quote it")
        seconds = parse_duration(text, origin=f"{origin} max_age")
        out.append(Check("hygiene", "backup_age", f"backup_age[<={text.strip()}]", {"max_age": seconds},
                         f"{origin} max_age"))
    if data["wal_continuity"]:
        out.append(Check("hygiene", "wal_continuity", "wal_continuity", {}, f"{origin} wal_continuity"))
    return out


# -- small validators ---------------------------------------------------------------------
def _error(origin: str, key: str, problem: str, accepted: str, fix: str) -> UsageError:
    where = f"{origin} {key}".strip()
    return UsageError(f"invalid check declaration: {problem} (from {where})", checked=f"accepted: {accepted}",
                      fix=fix)


def _known(data: Mapping[str, Any], keys, origin: str, key: str) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise _error(origin, key, f"unknown key {unknown[0]!r}", ", ".join(keys), "check the spelling")


def _table(data: Mapping[str, Any], key: str, origin: str, parent: str, known=None) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise _error(origin, key, f"expected a table, got {type(value).__name__}", f"[tool.pgrestore.{key}]",
                     f"write [tool.pgrestore.{key}] with keys below it")
    if known is not None:
        _known(value, known, f"{origin} {key}".strip(), parent)
    return value


def _names(value: Any, origin: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _error(origin, key, f"expected a list of names, got {value!r}", "a list of strings",
                     f"e.g. {key} = ['name']")
    return [v.strip() for v in value]


def _list_of_tables(value: Any, origin: str, key: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise _error(origin, key, "expected a list of tables", f"[[tool.pgrestore.expect.{key}]] blocks",
                     f"write one [[tool.pgrestore.expect.{key}]] block per entry")
    return value


def _bool(data: Mapping[str, Any], key: str, origin: str) -> None:
    if not isinstance(data[key], bool):
        raise _error(origin, key, f"expected true or false, got {data[key]!r}", "true | false", f"{key} = true")


def _unique(checks: list[Check]) -> list[Check]:
    """Two declarations of the same thing would give two items with one id: number them."""
    seen: dict[str, int] = {}
    out = []
    for check in checks:
        n = seen[check.name] = seen.get(check.name, 0) + 1
        out.append(check if n == 1 else Check(check.family, check.kind, f"{check.name}#{n}", check.params,
                                              check.origin))
    return out
