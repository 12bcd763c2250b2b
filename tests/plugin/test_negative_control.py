"""``--restore-negative-control``: a drill that can fail, proven on a real backup.

On a healthy source every ``negative_control[<target>]`` passes (the withheld segment is
caught), while the normal restores and drills are unchanged.  With a conftest hook that blinds
the verdict (every restore "REACHED"), the normal drills still pass — and the negative control
fails, which is the point: it catches a drill that stopped looking.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from plugin_support import leftovers

from pytest_pgrestore.settings._target import RestoreTarget

DRILLS = """
import pytest

def test_latest(restored_db):
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {total}

@pytest.mark.restore_target("immediate")
def test_immediate(restored_db):
    restored_db.execute("select 1")

@pytest.mark.restore_target("{time}")
def test_time(restored_db):
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {rows_at_time}
"""

BLIND_VERDICT = """
import pytest_pgrestore.restore._attempt as attempt
from pytest_pgrestore.restore._result import Outcome
from pytest_pgrestore.restore._verdict import Verdict


def _blind(obs, target, **kwargs):  # a drill that stopped looking: every restore "reached" its target
    return Verdict(Outcome.REACHED, "forced by a test hook", None)


attempt.decide = _blind
"""


@pytest.fixture
def run(pytester, workroot, scenario, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}",
            f"--restore-source={scenario.file_url}", "-rA", *args, timeout=300,
        )  # fmt: skip

    return run


def properties(xml_path, name: str) -> dict[str, str]:
    case = next(c for c in ET.parse(xml_path).iter("testcase") if c.get("name") == name)
    return {p.get("name"): p.get("value") for p in case.iter("property")}


def test_negative_control_passes_on_a_healthy_source(pytester, run, scenario, workroot):
    c2 = scenario.commits["c2"]
    # the target as pytest-pgrestore writes it in item ids (microseconds without trailing zeros)
    time = str(RestoreTarget.parse((c2[0].time + (c2[1].time - c2[0].time) / 2).isoformat()))
    pytester.makepyfile(
        test_drills=DRILLS.format(
            total=scenario.total_rows, time=time, rows_at_time=scenario.rows_at("c2", 0)
        )
    )
    result = run("--restore-negative-control", "--junitxml=report.xml")
    output = "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=9)
    for target in ("latest", "immediate", time):
        assert f"PASSED test_drills.py::negative_control[{target}]" in result.outlines, output
        assert f"PASSED test_drills.py::restore[{target}]" in result.outlines
    xml = pytester.path / "report.xml"
    latest = properties(xml, "negative_control[latest]")
    assert latest["negative_control_outcome"] == "TRUNCATED"
    assert latest["negative_control_why"] == "the newest archived segment on timeline 1"
    immediate = properties(xml, "negative_control[immediate]")
    assert immediate["negative_control_outcome"] in ("ENDED_EARLY", "RESTORE_COMMAND_ABORT")
    assert "holds the end of backup" in immediate["negative_control_why"]
    timed = properties(xml, f"negative_control[{time}]")
    assert timed["negative_control_outcome"] == "ENDED_EARLY"
    assert "stopped in it" in timed["negative_control_why"]
    assert properties(xml, "restore[latest]")["restore_outcome"] == "REACHED"  # the drill itself is unchanged
    assert leftovers(workroot) == ([], [])


def test_without_the_option_there_is_no_negative_control(pytester, run, scenario):
    pytester.makepyfile("def test_drill(restored_db): pass")
    result = run("--collect-only", "-q")
    assert "test_drills.py::negative_control" not in "\n".join(result.outlines)
    assert not [line for line in result.outlines if "negative_control[" in line]


def test_negative_control_fails_when_a_hook_blinds_the_verdict(pytester, run, scenario, workroot):
    pytester.makeconftest(BLIND_VERDICT)
    pytester.makepyfile(test_drills="def test_latest(restored_db):\n    restored_db.execute('select 1')\n")
    result = run("--restore-negative-control")
    output = "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=2, failed=1)
    assert "PASSED test_drills.py::restore[latest]" in result.outlines  # the blind drill looks fine
    assert "PASSED test_drills.py::test_latest" in result.outlines
    assert any(
        line.startswith(
            "FAILED test_drills.py::negative_control[latest] - negative control for latest "
            "FAILED: WAL segment "
        )
        and "was withheld, yet the restore ended REACHED" in line
        for line in result.outlines
    ), output
    assert "the drill's verdict is not looking" in output
    assert "Traceback" not in output
    assert result.ret == 1
    assert leftovers(workroot) == ([], [])
