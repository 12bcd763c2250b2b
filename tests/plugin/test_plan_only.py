"""--restore-plan-only: every restore the session would run is planned and reported; nothing is fetched."""

from __future__ import annotations

import pytest
from plugin_support import leftovers

DRILL = """
def test_rows(restored_db):
    assert restored_db.execute("select count(*) from t").fetchone()[0] > 0
"""


def test_plan_only_reports_each_plan_and_downloads_nothing(pytester, scenario, workroot):
    pytester.makepyfile(test_drill=DRILL)
    result = pytester.runpytest_subprocess(
        f"--restore-source={scenario.file_url}", f"--restore-workdir={workroot / 'runs'}",
        "--restore-plan-only", "-v", "-rs", f"--junitxml={pytester.path / 'junit.xml'}")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*plan[[]latest[]] PASSED*", "*restores are planned, not run*"])
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="plan_backup"' in junit and scenario.backups["b2"].name in junit
    assert leftovers(workroot) == ([], [])
    assert not (workroot / "runs").exists() or not any((workroot / "runs").rglob("pgdata"))


def test_twin_plan_only_fails_an_unreachable_target(pytester, scenario, workroot):
    pytester.makepyfile(test_drill=DRILL)
    result = pytester.runpytest_subprocess(
        f"--restore-source={scenario.file_url}", f"--restore-workdir={workroot / 'runs'}",
        "--restore-plan-only", "--restore-target=lsn:FF/0")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*past the newest archived WAL*"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
