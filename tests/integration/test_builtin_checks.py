"""--restore-checks against real restores of the demo schema: expectations, and corruption checks
that catch real damage.

The damage is one byte written offline into a copy of a real backup's ``base.tar``, i.e. into the
PGDATA the restore lays down, before the server first starts.  Two things had to be ruled out for
it to reach the checks:

* pg_verifybackup would refuse the restore first: the backups here have no manifest (what
  ``pg_basebackup --no-manifest`` leaves), so nothing but the checks can see the damage;
* WAL replay would repair it: a page modified after the backup's start checkpoint is rewritten
  from a full-page image.  ``users`` and its indexes are written once, before the backup, and never
  again, so their pages are exactly what the backup holds.

The source clusters have data checksums on, except the one for the "index key" twin: there amcheck's
``heapallindexed`` is the only thing that can tell a changed key ("alice" → "amice", still in order).
"""

from __future__ import annotations

import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from checks_support import build_demo_backup, copy_backup, damage

from pytest_pgrestore.checks._corruption import verify_checksums
from pytest_pgrestore.errors import CheckSkipped
from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.settings._options import resolve_settings

pytestmark = pytest.mark.integration

EXPECTATIONS = """
[tool.pgrestore.expect]
tables = ["users", "models", "jobs", "invoices"]
extensions = ["plpgsql", "pg_trgm"]
exact_rows = { users = 50, models = 21 }
min_rows = { jobs = 80 }
fresh = [{ table = "activity", column = "written_at", within = "1h" },
         { table = "jobs", column = "created_at", within = "26h" }]

[[tool.pgrestore.expect.key_rows]]
table = "users"
match = { email = "alice@example.com" }

[[tool.pgrestore.expect.key_rows]]
table = "users"
match = { email = "zoe@example.com" }

[[tool.pgrestore.expect.key_rows]]
table = "models"
pk = 1

[[tool.pgrestore.expect.key_rows]]
table = "jobs"
where = "id = 7 AND status = 'done'"
"""


@pytest.fixture(scope="module")
def demo(workroot):
    """The demo schema, checksums on, no manifest; never damaged (tests damage copies)."""
    return build_demo_backup(workroot / "checks-demo", manifest=False)


@pytest.fixture
def damaged(demo, workroot):
    root = Path(tempfile.mkdtemp(prefix="dmg-", dir=workroot))
    yield copy_backup(demo, root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def run_checks(pytester, workroot, monkeypatch):
    """``run_checks(source, *args)`` → {item name: (outcome, message)} from the JUnit report."""
    monkeypatch.setenv("COLUMNS", "300")

    def run(source: str, *args: str) -> dict[str, tuple[str, str]]:
        junit = pytester.path / "junit.xml"
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--restore-source={source}", f"--restore-workdir={workroot / 'runs'}",
            f"--junitxml={junit}", "-rA", *args, timeout=240)
        run.output = "\n".join(result.outlines + result.errlines)
        return outcomes(junit)

    return run


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, message = tag, (node.get("message") or "") + "\n" + (node.text or "")
        out[case.get("name")] = (outcome, message)
    return out


def test_only_a_pyproject_block_one_item_per_expectation_wrong_ones_show_expected_and_found(
        pytester, run_checks, demo):
    pytester.makefile(".toml", pyproject=EXPECTATIONS)  # no Python at all
    got = run_checks(demo.url, "--restore-checks")
    passed = [name for name, (outcome, _) in got.items() if outcome == "passed"]
    assert passed == [
        "restore[latest]", "table[users]", "table[models]", "table[jobs]", "extension[plpgsql]", "rows[users==50]",
        "rows[jobs>=80]", "key_row[users email=alice@example.com]", "key_row[models pk=1]",
        "fresh[activity.written_at<=1h]",
        # a healthy restore passes every corruption check, pg_checksums last (a clean stop, then a restart)
        "amcheck[btree]", "amcheck[heap]", "full_read",
        "backups[>=1]", "wal_continuity", "pg_checksums"], run_checks.output
    failed = {name: message for name, (outcome, message) in got.items() if outcome == "failure"}
    expected_vs_found = {
        "table[invoices]": "table invoices: expected a table, found no such relation (tables in the search "
                           "path: activity, jobs, models, users)",
        "extension[pg_trgm]": "extension pg_trgm: expected installed in database postgres, found installed: "
                              "plpgsql (pg_trgm is available to CREATE EXTENSION on this server)",
        "rows[models==21]": "table public.models: expected exactly 21 rows, found 20",
        "key_row[users email=zoe@example.com]": "table public.users: expected a row where email = "
                                                "'zoe@example.com', found none among its 50 rows",
        "key_row[jobs: id = 7 AND status = 'done']": "table public.jobs: expected a row where id = 7 AND "
                                                     "status = 'done', found none among its 200 rows",
        "fresh[jobs.created_at<=26h]": "newest public.jobs.created_at: expected within 1d2h before ",
    }
    assert sorted(failed) == sorted(expected_vs_found), run_checks.output
    for name, text in expected_vs_found.items():
        assert text in failed[name], failed[name]
    assert "(the last transaction replayed), found 2026-03-01T03:20:00+00:00" in failed["fresh[jobs.created_at<=26h]"]
    assert "Traceback" not in run_checks.output
    skipped = {name: message for name, (outcome, message) in got.items() if outcome == "skipped"}
    assert sorted(skipped) == ["bucket_encryption", "bucket_policy[not public]", "object_encryption",
                               "public_access_block"]
    assert "the source file://" in skipped["bucket_encryption"] and "is not in S3" in skipped["bucket_encryption"]


def test_twin_corrupted_index_page_fails_amcheck_naming_the_index(damaged, run_checks):
    damage(damaged, "users_email_key", block=1, where="page")
    got = run_checks(damaged.url, "--restore-checks=corruption")
    outcome, message = got["amcheck[btree]"]
    assert outcome == "failure", run_checks.output
    assert "index public.users_email_key on public.users (database postgres): invalid page in block 1" in message
    assert got["full_read"][0] == "passed"  # the heap is intact: a full read cannot see index damage
    outcome, message = got["pg_checksums"]
    assert outcome == "failure"
    assert f"index public.users_email_key ({damaged.files['users_email_key']}, block 1)" in message


def test_twin_corrupted_heap_page_fails_the_full_read_naming_the_table(damaged, run_checks):
    damage(damaged, "users", block=0, where="page")
    got = run_checks(damaged.url, "--restore-checks=corruption")
    outcome, message = got["full_read"]
    assert outcome == "failure", run_checks.output
    assert "table public.users (database postgres): invalid page in block 0 of relation" in message
    assert got["amcheck[heap]"][0] == "failure" and "table public.users" in got["amcheck[heap]"][1]
    outcome, message = got["pg_checksums"]
    assert outcome == "failure"
    assert f"table public.users ({damaged.files['users']}, block 0)" in message
    assert "bad checksums 1" in message


@pytest.fixture(scope="module")
def demo_without_checksums(workroot):
    return build_demo_backup(workroot / "checks-nosum", data_checksums=False, manifest=False)


def test_twin_changed_index_key_without_checksums_heapallindexed_catches_it(demo_without_checksums, workroot,
                                                                           run_checks):
    copy = copy_backup(demo_without_checksums, Path(tempfile.mkdtemp(prefix="key-", dir=workroot)))
    damage(copy, "users_email_key", block=1, where="index key")
    got = run_checks(copy.url, "--restore-checks=corruption")
    outcome, message = got["amcheck[btree]"]
    assert outcome == "failure", run_checks.output
    assert "index public.users_email_key on public.users (database postgres): heap tuple" in message
    assert 'lacks matching index tuple within index "users_email_key"' in message
    assert got["full_read"][0] == "passed"
    outcome, message = got["pg_checksums"]
    assert outcome == "skipped" and "data checksums are off in this cluster" in message


@pytest.fixture(scope="module")
def bin_without_amcheck(workroot) -> Path:
    """PostgreSQL 15 relocated (it finds share/ relative to its binaries) with amcheck removed."""
    root = workroot / "pg15-no-amcheck"
    (root / "lib/postgresql/15").mkdir(parents=True)
    shutil.copytree("/usr/lib/postgresql/15/bin", root / "lib/postgresql/15/bin")
    (root / "lib/postgresql/15/lib").symlink_to("/usr/lib/postgresql/15/lib")
    shutil.copytree("/usr/share/postgresql/15", root / "share/postgresql/15")
    for path in (root / "share/postgresql/15/extension").glob("amcheck*"):
        path.unlink()
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    return root / "lib/postgresql/15/bin"


def test_twin_amcheck_missing_is_skipped_with_the_reason(demo, bin_without_amcheck, run_checks):
    got = run_checks(demo.url, "--restore-checks=corruption", f"--restore-pg-bin={bin_without_amcheck}")
    for name in ("amcheck[btree]", "amcheck[heap]"):
        outcome, message = got[name]
        assert outcome == "skipped", run_checks.output
        assert "the amcheck extension is not available on the restored server" in message
    assert got["full_read"][0] == got["pg_checksums"][0] == "passed"


def test_pg_checksums_restarts_the_server_on_the_same_port_and_password(demo, workroot):
    settings = resolve_settings(cli={"source": demo.url, "target": "immediate", "workdir": str(workroot / "runs")},
                                env={}, ini={})
    with Restorer(settings).restore() as inst:
        dsn, before = inst.dsn, inst.server.postmaster_pid()
        report = verify_checksums(inst)
        assert report.ok and report.checked[0].startswith("files scanned ")
        assert inst.server.postmaster_pid() != before  # really restarted
        with inst.connect() as conn:  # the DSN handed out before still works
            assert conn.execute("select count(*) from users").fetchone() == (50,)
        inst.server, server = None, inst.server  # a runtime that cannot restart in place: skipped, not passed
        try:
            with pytest.raises(CheckSkipped, match="needs a cleanly stopped cluster"):
                verify_checksums(inst)
        finally:
            inst.server = server
    assert dsn


HAND_WRITTEN = '''
import pytest
from pytest_pgrestore.checks.assertions import (ExpectationFailed, assert_row_count, assert_row_exists,
                                         assert_tables_exist, missing_tables, row_count, row_exists)


def test_plain_asserts_on_returned_values(restored_db):
    assert missing_tables(restored_db, ["users", "jobs"]) == []
    assert row_count(restored_db, "users") == 50
    assert row_exists(restored_db, "users", email="alice@example.com")
    assert row_exists(restored_db, "models", pk=1)


def test_rewritten_assert_shows_the_difference(restored_db):
    assert missing_tables(restored_db, ["users", "invoices"]) == []


def test_helper_message_shows_expected_and_found(restored_db):
    assert_row_count(restored_db, "jobs", at_least=500)


def test_a_failed_check_leaves_the_connection_usable(restored_db):
    with pytest.raises(ExpectationFailed):
        assert_tables_exist(restored_db, "no such table")
    with pytest.raises(ExpectationFailed):
        assert_row_exists(restored_db, "jobs", where="id = 7 and status = 'done'")
    assert restored_db.execute("select 1").fetchone() == (1,)
'''


def test_helpers_for_hand_written_drills(pytester, run_checks, demo):
    pytester.makepyfile(test_drill=HAND_WRITTEN)
    got = run_checks(demo.url)
    assert got["test_plain_asserts_on_returned_values"] == ("passed", ""), run_checks.output
    assert got["test_a_failed_check_leaves_the_connection_usable"] == ("passed", "")
    outcome, message = got["test_rewritten_assert_shows_the_difference"]
    assert outcome == "failure" and "AssertionError: assert ['invoices'] == []" in message
    outcome, message = got["test_helper_message_shows_expected_and_found"]
    assert outcome == "failure"
    assert "ExpectationFailed: table public.jobs: expected at least 500 rows, found 200" in message
