"""Which role drills run as, end to end through the plugin (issue 18, least privilege).

Not given ``--restore-user``, drills connect as the harness's non-superuser drill role, and
``restored_db_writable`` still writes (in its clone); given ``--restore-user postgres``, they run
as that superuser and the evidence and the terminal say so.  One real backup (``scenario``) serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_support import leftovers

DRILLS = """
import psycopg
import pytest

SUPERUSER = "select current_user, rolsuper from pg_roles where rolname = current_user"

def test_who(restored_db, restored_postgres):
    user, superuser = restored_db.execute(SUPERUSER).fetchone()
    print(f"DRILL-ROLE {{user}} superuser={{superuser}}")
    assert user == restored_postgres.drill_user
    assert superuser is {superuser}

def test_no_program(restored_db):
    {program}

def test_writes_into_its_clone(restored_db_writable):
    user = restored_db_writable.execute("select current_user").fetchone()[0]
    restored_db_writable.execute("insert into t (value) values ('written by ' || current_user)")
    restored_db_writable.commit()
    assert restored_db_writable.execute("select count(*) from t").fetchone()[0] == {total} + 1
"""

REFUSED = """with pytest.raises(psycopg.errors.InsufficientPrivilege):
        restored_db.execute("COPY (select 1) TO PROGRAM 'true'")"""
ALLOWED = """restored_db.execute("select pg_read_file('/etc/passwd')")"""


def _run(pytester: pytest.Pytester, workroot: Path, *args: str) -> tuple[pytest.RunResult, dict, str]:
    evidence = workroot / "evidence.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", f"--restore-workdir={workroot / 'runs'}",
                                           f"--restore-report={evidence}", *args, timeout=180)
    (record,) = json.loads(evidence.read_text())["restores"]
    return result, record, "\n".join(result.outlines + result.errlines)


def test_drills_run_as_the_drill_role_by_default(pytester, scenario, workroot, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    pytester.makepyfile(test_drills=DRILLS.format(superuser=False, program=REFUSED, total=scenario.total_rows))
    result, record, output = _run(pytester, workroot, f"--restore-source={scenario.file_url}")
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=4)
    assert "DRILL-ROLE pgrestore_drill superuser=False" in output
    assert record["drill_role"] == "pgrestore_drill" and record["drill_superuser"] is False
    assert record["warnings"] == []
    assert "WARNING: drills ran as" not in output
    assert leftovers(workroot) == ([], [])


def test_twin_restore_user_postgres_drills_as_the_superuser_and_says_so(pytester, scenario, workroot, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    pytester.makepyfile(test_drills=DRILLS.format(superuser=True, program=ALLOWED, total=scenario.total_rows))
    result, record, output = _run(pytester, workroot, f"--restore-source={scenario.file_url}",
                                  "--restore-user=postgres")
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=4)
    assert "DRILL-ROLE postgres superuser=True" in output
    assert record["drill_role"] == "postgres" and record["drill_superuser"] is True
    (warning,) = record["warnings"]
    assert warning.startswith("drills ran as postgres, a SUPERUSER (--restore-user from cli --restore-user)")
    warned = [line for line in result.outlines if line.startswith("  WARNING: drills ran as postgres, a SUPERUSER")]
    assert len(warned) == 1, output
    assert leftovers(workroot) == ([], [])
