"""The drill role's SQL, chosen by server version, and the warning when drills ran as a superuser
(issue 18, least privilege).

Only PostgreSQL 15 runs here: the PostgreSQL 13 path (no ``pg_read_all_data``) is chosen by
``server_version_num`` below, and run for real on 15 by forcing it
(``tests/integration/test_drill_role.py::test_before_14_the_role_reads_through_per_schema_grants``).
"""

from __future__ import annotations

import pytest

from pytest_pgrestore.restore._instance import (
    drill_role_sql,
    read_grants,
    uses_pg_read_all_data,
    write_grants,
)

DANGEROUS = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", " SUPERUSER",
             "pg_write_all_data")


def _text(stmts) -> list[str]:
    return [s.as_string(None) for s in stmts]


@pytest.mark.parametrize("version, predefined", [(90624, False), (120015, False), (130014, False),
                                                 (140000, True), (150004, True), (180000, True)])
def test_pg_read_all_data_only_from_14(version, predefined):
    assert uses_pg_read_all_data(version) is predefined


def test_the_older_path_can_be_forced_on_a_newer_server():
    assert uses_pg_read_all_data(150004, forced=False) is False
    assert uses_pg_read_all_data(130000, forced=True) is True


def test_before_10_there_are_no_predefined_monitoring_roles_either():
    (create,) = _text(drill_role_sql("r", predefined=False, server_version_num=90624))
    assert create.startswith('CREATE ROLE "r" LOGIN NOSUPERUSER')


def test_the_role_is_made_without_any_right_to_the_server_itself():
    create, settings, grant = _text(drill_role_sql("pgrestore_drill", predefined=True, server_version_num=150004))
    assert create == ('CREATE ROLE "pgrestore_drill" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                      "BYPASSRLS INHERIT")
    assert settings == 'GRANT pg_read_all_settings, pg_read_all_stats TO "pgrestore_drill"'
    assert grant == 'GRANT pg_read_all_data TO "pgrestore_drill"'


def test_before_14_there_is_no_pg_read_all_data_grant_but_per_schema_selects():
    stmts = _text(drill_role_sql("pgrestore_drill", predefined=False, server_version_num=130014))
    assert len(stmts) == 2 and not any("pg_read_all_data" in s for s in stmts)
    assert _text(read_grants("app data", "pgrestore_drill")) == [
        'GRANT USAGE ON SCHEMA "app data" TO "pgrestore_drill"',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "app data" TO "pgrestore_drill"',
        'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "app data" TO "pgrestore_drill"',
    ]


def test_no_statement_ever_grants_files_programs_or_superuser():
    every = (_text(drill_role_sql("r", predefined=True)) + _text(drill_role_sql("r", predefined=False))
             + _text(read_grants("s", "r")))
    for stmt in every:
        assert not any(word in stmt for word in DANGEROUS), stmt
    # writes are granted per object, in a writable clone only: never a predefined role
    for stmt in _text(write_grants("s", "r")):
        assert not any(word in stmt for word in DANGEROUS), stmt


def test_a_superuser_drill_is_a_warning_in_the_record_and_the_terminal():
    from types import SimpleNamespace

    from pytest_pgrestore.evidence._record import drill_warnings
    from pytest_pgrestore.evidence._report import junit_properties, terminal_lines

    settings = SimpleNamespace(origins={"user": "env PGRESTORE_USER"})
    (warning,) = drill_warnings({"drill_role": "postgres", "drill_superuser": True}, settings)
    assert warning.startswith("drills ran as postgres, a SUPERUSER (--restore-user from env PGRESTORE_USER)")
    rec = {"id": "restore[latest]", "outcome": "REACHED", "passed": True, "rto": {"seconds": None},
           "rpo": {"seconds": None}, "drill_role": "postgres", "drill_superuser": True, "warnings": [warning],
           "detail": "reached"}
    assert (f"  WARNING: {warning}", False) in terminal_lines([rec])
    assert ("restore_drill_superuser", "true") in junit_properties(rec)


def test_twin_the_drill_role_is_no_warning():
    from pytest_pgrestore.evidence._record import drill_warnings
    from pytest_pgrestore.evidence._report import terminal_lines

    assert drill_warnings({"drill_role": "pgrestore_drill", "drill_superuser": False}, None) == []
    rec = {"id": "restore[latest]", "outcome": "REACHED", "passed": True, "rto": {"seconds": None},
           "rpo": {"seconds": None}, "drill_role": "pgrestore_drill", "drill_superuser": False, "warnings": [],
           "detail": "reached"}
    assert not any("WARNING" in line for line, _ in terminal_lines([rec]))
