"""Nothing of ours survives a drill run that is stopped: SIGTERM like Ctrl-C, and teardown
trouble is a warning that never hides the drills' results."""

from __future__ import annotations

import signal

import pytest
from plugin_support import leftovers
from test_drill_runs import start_sleeping_drill


def test_sigterm_stops_postgres_and_removes_the_run_dir(pytester, scenario, workroot):
    proc, _ = start_sleeping_drill(pytester, scenario, workroot)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "SigtermInterrupt: SIGTERM" in output
    assert leftovers(workroot) == ([], [])


TEARDOWN_TROUBLE = """
from pytest_pgrestore.restore._manager import RestoreManager

_close = RestoreManager.close


def close(self):
    _close(self)  # the servers are stopped; then something goes wrong
    raise RuntimeError("the store connection pool would not close")


RestoreManager.close = close
"""


def test_teardown_errors_become_warnings_and_keep_the_results(pytester, scenario, workroot):
    pytester.makeconftest(TEARDOWN_TROUBLE)
    pytester.makepyfile("def test_drill(restored_db):\n    restored_db.execute('select 1')\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}",
        f"--restore-source={scenario.file_url}", "-rA", timeout=180,
    )  # fmt: skip
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=2, warnings=1)
    assert "pgrestore teardown: the store connection pool would not close" in output
    assert "Traceback" not in output
    assert leftovers(workroot) == ([], [])
