"""Declarations of the built-in checks (pure parsing) and the listing-only hygiene verdicts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pytest_pgrestore.checks import _hygiene as hygiene
from pytest_pgrestore.checks._expectations import parse_declaration, parse_size
from pytest_pgrestore.errors import UsageError
from pytest_pgrestore.formats._catalog import Backup, Catalog, WalArchive, WalSegment
from pytest_pgrestore.settings._options import resolve_settings

ALL = ("expectations", "corruption", "hygiene")


def names(data, families=ALL, defaults=True) -> list[str]:
    return [c.name for c in parse_declaration(data, origin="t", families=families, defaults=defaults)]


def error(data) -> str:
    with pytest.raises(UsageError) as err:
        parse_declaration(data, origin="pyproject.toml [tool.pgrestore]", families=ALL)
    return str(err.value)


def test_every_expectation_kind_gets_its_own_readable_id():
    assert names({"expect": {
        "databases": ["app"], "schemas": ["billing"], "tables": ["users"], "extensions": ["pg_trgm"],
        "exact_rows": {"users": 50}, "min_rows": {"jobs": 0},
        "key_rows": [{"table": "users", "pk": [1, 2]}, {"table": "users", "match": {"email": "a@b", "id": 1}},
                     {"table": "jobs", "where": "id = 7\n   and status = 'x'"},
                     {"sql": "select true", "name": "custom"}],
        "fresh": [{"table": "jobs", "column": "created_at", "within": "90m", "name": "recent jobs"}],
    }}, families=("expectations",)) == [
        "database[app]", "schema[billing]", "table[users]", "extension[pg_trgm]", "rows[users==50]", "rows[jobs>=0]",
        "key_row[users pk=1,2]", "key_row[users email=a@b id=1]", "key_row[jobs: id = 7 and status = 'x']",
        "key_row[custom]", "fresh[recent jobs]"]


def test_corruption_and_hygiene_defaults_and_their_switches():
    assert names({}) == ["amcheck[btree]", "amcheck[heap]", "full_read", "pg_checksums", "bucket_encryption",
                         "object_encryption", "public_access_block", "bucket_policy[not public]", "backups[>=1]",
                         "wal_continuity"]
    off = {"corruption": {"amcheck": False, "heap": False, "full_read": False, "checksums": False},
           "hygiene": {"encryption": "none", "public_access_block": False, "policy_not_public": False,
                       "min_backups": 0, "wal_continuity": False, "client_side_encryption": True,
                       "max_age": "2d"}}
    assert names(off) == ["client_side_encryption", "backup_age[<=2d]"]


def test_a_module_declaration_gives_only_the_sections_it_has():
    assert names({"expect": {"tables": ["t"]}}, defaults=False) == ["table[t]"]
    assert names({"corruption": {"heap": False}}, defaults=False) == ["amcheck[btree]", "full_read", "pg_checksums"]


def test_heapallindexed_limit():
    def limit(value):
        (check,) = [c for c in parse_declaration({"corruption": {"heapallindexed": value}}, origin="t",
                                                 families=("corruption",)) if c.kind == "amcheck_btree"]
        return check.params["heapallindexed_max"]

    assert (limit(True), limit(False), limit("512MB"), limit("1 GB")) == (None, 0, 512 << 20, 1 << 30)
    assert parse_size("8192", origin="x") == 8192
    with pytest.raises(UsageError, match="invalid size '1 parsec'"):
        parse_size("1 parsec", origin="x")


def test_the_same_check_twice_is_numbered():
    assert names({"expect": {"tables": ["users", "users"]}}, families=("expectations",)) == \
        ["table[users]", "table[users]#2"]


@pytest.mark.parametrize("data, message", [
    ({"expect": {"tables": "users"}}, "expected a list of names, got 'users' (from pyproject.toml [tool.pgrestore] "
                                      "expect tables)"),
    ({"expect": {"key_rows": [{"table": "t", "pk": 1, "where": "x"}]}},
     "give exactly one of pk, match, where, sql (got pk, where)"),
    ({"expect": {"key_rows": [{"sql": "select 1"}]}}, "a sql key row needs name = '…'"),
    ({"expect": {"key_rows": [{"pk": 1}]}}, "pk needs table = NAME"),
    ({"expect": {"fresh": [{"table": "t", "column": "c"}]}}, "within is required"),
    ({"expect": {"fresh": [{"table": "t", "column": "c", "within": "soon"}]}}, "invalid duration 'soon'"),
    ({"hygiene": {"encryption": "AES256"}}, "unknown level 'AES256'"),
    ({"hygiene": {"min_backups": -1}}, "expected a count >= 0, got -1"),
    ({"corruption": {"checksum": True}}, "unknown key 'checksum'"),
    ({"corruption": {"amcheck": "yes"}}, "expected true or false, got 'yes'"),
    ({"expectations": {}}, "unknown key 'expectations'"),
])
def test_declaration_errors_name_origin_key_and_what_is_accepted(data, message):
    assert message in error(data)


@pytest.mark.parametrize("given, kinds", [
    ("all", ("expectations", "corruption", "hygiene")),
    ("none", ()),
    ("hygiene,expectations", ("expectations", "hygiene")),
    (" corruption ", ("corruption",)),
])
def test_checks_option_values(given, kinds):
    assert resolve_settings(cli={"checks": given}, env={}, ini={}).checks == kinds


def test_checks_option_refuses_anything_else_naming_its_source():
    with pytest.raises(UsageError) as err:
        resolve_settings(cli={}, env={"PGRESTORE_CHECKS": "amcheck"}, ini={})
    assert "invalid checks 'amcheck' (from env PGRESTORE_CHECKS)" in str(err.value)
    assert "all | none | a comma-separated list of expectations, corruption, hygiene" in str(err.value)


# -- listing-only hygiene verdicts -------------------------------------------------------
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def catalog(*ages_h: float, encryption: str | None = None, wal: tuple[int, ...] = (2, 3, 4)) -> Catalog:
    backups = [Backup(name=f"b{i}", format="walg" if encryption else "basebackup", start_lsn=(2 + i) << 24,
                      stop_lsn=((2 + i) << 24) + 100, timeline=1, stop_time=NOW - timedelta(hours=h),
                      details={"encryption": encryption} if encryption else {})
               for i, h in enumerate(sorted(ages_h, reverse=True))]
    segments = {1: {n: WalSegment(1, n, f"wal/{n:024X}", 16 << 20, NOW) for n in wal}}
    return Catalog(source="s3://b/p", format="basebackup", backups=backups,
                   wal=WalArchive(segment_size=16 << 20, segments=segments))


def test_backup_count_and_age_through_checks_py():
    assert hygiene.backup_count(catalog(30, 5), 2).ok
    assert hygiene.backup_count(catalog(5), 3).detail == "1 backup(s) in s3://b/p, at least 3 required"
    assert hygiene.backup_age(catalog(30, 5), 26 * 3600, now=NOW).detail == "the newest backup b1 finished 5h ago"
    stale = hygiene.backup_age(catalog(30), 26 * 3600, now=NOW)
    assert not stale.ok and "finished 1d6h ago, older than the allowed 1d2h" in stale.detail


def test_wal_continuity_names_the_gap():
    assert hygiene.wal_continuity_check(catalog(5)).ok
    gap = hygiene.wal_continuity_check(catalog(5, wal=(2, 4)))
    assert not gap.ok
    assert "timeline 1: 000000010000000000000003..000000010000000000000003 (1 segments)" in gap.detail


def test_client_side_encryption_from_the_format():
    assert hygiene.client_side_encryption(catalog(5, encryption="libsodium")).ok
    plain = hygiene.client_side_encryption(catalog(5))
    assert not plain.ok and "found not encrypted (its format has no client-side encryption)" in plain.detail
