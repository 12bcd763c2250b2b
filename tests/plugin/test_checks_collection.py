"""--restore-checks without any server: what is collected, from where, with which ids; option and
declaration errors.  Inner runs are in-process and stop at collection, or fail before any restore."""

from __future__ import annotations

import pytest

PYPROJECT = """
[tool.pgrestore.expect]
tables = ["users", "public.jobs"]
min_rows = { jobs = 80 }
exact_rows = { users = 50 }
extensions = ["plpgsql"]
fresh = [{ table = "jobs", column = "created_at", within = "26h" }]

[[tool.pgrestore.expect.key_rows]]
table = "users"
match = { email = "alice@example.com" }

[[tool.pgrestore.expect.key_rows]]
table = "jobs"
where = "id = 7 AND status = 'failed'"

[tool.pgrestore.hygiene]
max_age = "26h"
"""


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--collect-only", "-q", *args)
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)
    return [line for line in result.outlines if "::" in line]


def test_nothing_is_collected_without_the_option(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_one_item_per_expectation_with_readable_ids(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT)
    ids = collected(pytester, "--restore-checks")
    assert ids == [
        "pyproject.toml::restore[latest]",  # placed before the first item that needs it
        "pyproject.toml::table[users]",
        "pyproject.toml::table[public.jobs]",
        "pyproject.toml::extension[plpgsql]",
        "pyproject.toml::rows[users==50]",
        "pyproject.toml::rows[jobs>=80]",
        "pyproject.toml::key_row[users email=alice@example.com]",
        "pyproject.toml::key_row[jobs: id = 7 AND status = 'failed']",
        "pyproject.toml::fresh[jobs.created_at<=26h]",
        "pyproject.toml::amcheck[btree]",
        "pyproject.toml::amcheck[heap]",
        "pyproject.toml::full_read",
        "pyproject.toml::bucket_encryption",
        "pyproject.toml::object_encryption",
        "pyproject.toml::public_access_block",
        "pyproject.toml::bucket_policy[not public]",
        "pyproject.toml::backups[>=1]",
        "pyproject.toml::backup_age[<=26h]",
        "pyproject.toml::wal_continuity",
        "pyproject.toml::pg_checksums",  # it stops and restarts the server: always last
    ]


def test_families_select_what_is_collected(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT)
    assert collected(pytester, "--restore-checks=corruption") == [
        "pyproject.toml::restore[latest]", "pyproject.toml::amcheck[btree]", "pyproject.toml::amcheck[heap]", "pyproject.toml::full_read",
        "pyproject.toml::pg_checksums"]
    assert len(collected(pytester, "--restore-checks=expectations,hygiene")) == 1 + 8 + 7


def test_without_any_declaration_corruption_and_hygiene_run_at_their_defaults(pytester):
    pytester.makepyfile(test_drill="def test_drill(restored_db):\n    pass\n")
    result = pytester.runpytest("--collect-only", "-q", "--restore-checks")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == ["test_drill.py::restore[latest]", "test_drill.py::test_drill", "pgrestore::amcheck[btree]",
                   "pgrestore::amcheck[heap]", "pgrestore::full_read", "pgrestore::bucket_encryption",
                   "pgrestore::object_encryption", "pgrestore::public_access_block",
                   "pgrestore::bucket_policy[not public]", "pgrestore::backups[>=1]", "pgrestore::wal_continuity",
                   "pgrestore::pg_checksums"]
    assert "11 tests collected" in result.outlines[-1]  # counted like any item: collected, not injected


def test_a_drill_module_declares_its_own_checks_for_its_own_restore(pytester):
    pytester.makepyfile(test_pitr="""
        import pytest

        pytestmark = pytest.mark.restore_target("immediate")
        PGRESTORE = {"expect": {"min_rows": {"jobs": 200}}}

        def test_other(restored_db):
            pass
    """)
    ids = collected(pytester, "--restore-checks=expectations")
    assert ids == ["test_pitr.py::PGRESTORE::restore[immediate]", "test_pitr.py::PGRESTORE::rows[jobs>=200]",
                   "test_pitr.py::test_other"]


def test_the_ini_files_own_table_is_used_when_the_drills_live_elsewhere(pytester):
    pytester.makefile(".toml", pyproject=PYPROJECT.replace("[tool.pgrestore.hygiene]", "[tool.pytest.ini_options]\n"
                                                           "[tool.pgrestore.hygiene]"))
    pytester.mkdir("drills")
    pytester.path.joinpath("drills", "test_x.py").write_text("def test_x(restored_db):\n    pass\n")
    ids = collected(pytester, "drills", "--restore-checks=expectations")
    assert ids[:2] == ["pyproject.toml::restore[latest]", "pyproject.toml::table[users]"]
    assert ids[-1] == "drills/test_x.py::test_x"
    # collected from the root, it is the same file (not twice), and -k selects among its items
    assert collected(pytester, "--restore-checks=expectations", "-k", "users")[1:] == [
        "pyproject.toml::table[users]", "pyproject.toml::rows[users==50]",
        "pyproject.toml::key_row[users email=alice@example.com]"]


def test_a_bad_declaration_fails_collection_naming_file_and_key(pytester):
    pytester.makefile(".toml", pyproject="[tool.pgrestore.expect]\nmin_rows = { jobs = 'many' }\n")
    result = pytester.runpytest("--restore-checks")
    output = "\n".join(result.outlines)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "invalid check declaration: expected a row count >= 0, got 'many' " \
           "(from pyproject.toml [tool.pgrestore] expect min_rows.jobs)" in output
    assert "Traceback" not in output


def test_an_unknown_key_is_named_with_the_accepted_ones(pytester):
    pytester.makefile(".toml", pyproject="[tool.pgrestore.expect]\ntable = ['users']\n")
    output = "\n".join(pytester.runpytest("--restore-checks").outlines)
    assert "unknown key 'table'" in output
    assert "accepted: databases, schemas, tables, extensions, min_rows, exact_rows, key_rows, fresh" in output


def test_bad_option_value_is_a_usage_error_that_explains_the_bare_flag(pytester):
    result = pytester.runpytest("--restore-checks", "drills/")
    error = "\n".join(result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid checks 'drills/' (from --restore-checks)" in error
    assert "put it after the paths, or write --restore-checks=all" in error


def test_checks_from_env_and_ini_with_their_origin(pytester, monkeypatch):
    monkeypatch.setenv("PGRESTORE_CHECKS", "hygiene, corruption")
    config = pytester.parseconfigure()
    settings = config.stash[__import__("pytest_pgrestore.pytest_plugin._items", fromlist=["_SETTINGS"])._SETTINGS]
    assert settings.checks == ("corruption", "hygiene")
    assert "restore-checks: corruption,hygiene (from env PGRESTORE_CHECKS)" in settings.report_lines()


def test_check_items_fail_with_the_restore_when_it_fails(pytester, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    pytester.makefile(".toml", pyproject="[tool.pgrestore.expect]\ntables = ['users']\n")
    result = pytester.runpytest("--restore-checks=expectations,hygiene", "-rA")
    result.assert_outcomes(failed=7, errors=1)
    lines = "\n".join(result.outlines)
    assert "FAILED pyproject.toml::restore[latest] - no backup source configured" in lines
    assert "ERROR pyproject.toml::table[users] - Failed: restore[latest] failed: no backup source configured" in lines
    assert "FAILED pyproject.toml::bucket_encryption - no backup source configured" in lines
    # the listing failed once: the other hygiene items name where it is shown in full
    assert "FAILED pyproject.toml::wal_continuity - no backup source configured (in full at " \
           "pyproject.toml::bucket_encryption)" in lines
    assert lines.count("checked: --restore-source, env PGRESTORE_SOURCE") == 2  # restore item, first hygiene item
