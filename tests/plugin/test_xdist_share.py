"""Once per run under pytest-xdist: ``pytest -n 2`` restores each target once, for every worker.

Inner runs (subprocesses through the ``pytest11`` entry point) use a real backup.  The drills
note which worker ran them and which server they reached; the evidence record counts the
restores the workers really made; afterwards nothing may be left: no run dir, no server, no
share directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from plugin_support import copy_repo, leftovers

DRILLS = """
import json
import os

import psycopg


def note(inst, what):
    with open({seen!r}, "a") as f:
        f.write(json.dumps({{"worker": os.environ["PYTEST_XDIST_WORKER"], "port": inst.port,
                             "run_dir": str(inst.run_dir), "what": what}}) + "\\n")


def test_the_run_dir_belongs_to_the_controller(restored_postgres):
    record = json.loads((restored_postgres.run_dir / "run.json").read_text())
    assert record["pid"] == os.getppid()  # the xdist controller, not a worker
    supervisor = int((restored_postgres.run_dir / "supervisor.pid").read_text())
    argv = open(f"/proc/{{supervisor}}/cmdline", "rb").read().split(b"\\0")
    assert argv[argv.index(b"--harness") + 1] == str(os.getppid()).encode()  # watches the controller
    note(restored_postgres, "owner")

"""

PER_DRILL = """
def test_rows_{i}(restored_db, restored_postgres):
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {total}
    note(restored_postgres, "read")


def test_tcp_login_{i}(restored_postgres):
    with psycopg.connect(restored_postgres.dsn) as conn:  # every worker knows the same password
        assert conn.execute("select count(*) from t").fetchone()[0] == {total}
    note(restored_postgres, "tcp")


def test_writes_into_its_own_clone_{i}(restored_db_writable, restored_postgres):
    restored_db_writable.execute("create table mine (x int)")  # the same name in every clone
    restored_db_writable.execute("insert into t (value) values ('drill {i}')")
    restored_db_writable.commit()
    assert restored_db_writable.execute("select count(*) from t").fetchone()[0] == {total} + 1
    note(restored_postgres, "write")
"""


@pytest.fixture
def run_xdist(pytester: pytest.Pytester, workroot: Path):
    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-n", "2", f"--restore-workdir={workroot / 'runs'}", "-rA", *args, timeout=240)

    return run


def share_dirs(workroot: Path) -> list[Path]:
    return sorted((workroot / "runs").glob("xdist-*"))


def test_one_restore_shared_by_both_workers_and_nothing_left(pytester, run_xdist, scenario, workroot):
    seen = workroot / "seen.jsonl"
    body = DRILLS.format(seen=str(seen)) + "".join(
        PER_DRILL.format(i=i, total=scenario.total_rows) for i in range(4))
    pytester.makepyfile(test_drills=body)
    evidence = workroot / "evidence.json"
    result = run_xdist(f"--restore-source={scenario.file_url}", f"--restore-report={evidence}")
    assert result.ret == pytest.ExitCode.OK, "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=1 + 1 + 4 * 3)

    notes = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {n["worker"] for n in notes} == {"gw0", "gw1"}  # both workers ran drills ...
    assert len({(n["port"], n["run_dir"]) for n in notes}) == 1  # ... on one and the same server

    (record,) = json.loads(evidence.read_text())["restores"]
    assert record["outcome"] == "REACHED"
    sharing = record["sharing"]
    assert sharing["restores"] == 1, sharing  # counted from what the workers really did
    assert sharing["mode"] == "xdist" and sharing["restored_by"] in ("gw0", "gw1")
    assert sorted(sharing["workers"]) == ["gw0", "gw1"]
    assert {d["worker"] for d in record["drills"]} == {"gw0", "gw1"}

    assert leftovers(workroot) == ([], []), "run dirs / postgres processes left behind"
    assert share_dirs(workroot) == []


def test_a_failed_restore_is_tried_once_and_fails_every_worker(pytester, run_xdist, scenario, workroot):
    repo = copy_repo(scenario, workroot / "broken")
    segments = sorted(p for p in (repo / "wal").iterdir() if len(p.name) == 24)
    segments[-2].unlink()  # a gap before the newest segment: `latest` is refused from the listing
    pytester.makepyfile(test_drills="".join(
        f"def test_drill_{i}(restored_db):\n    pass\n\n" for i in range(6)))
    evidence = workroot / "evidence.json"
    result = run_xdist(f"--restore-source=file://{repo}", f"--restore-report={evidence}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1, errors=6)
    (record,) = json.loads(evidence.read_text())["restores"]
    assert record["outcome"] == "REFUSED_PREFLIGHT"
    assert record["sharing"]["restores"] == 1, record["sharing"]
    assert leftovers(workroot) == ([], [])
    assert share_dirs(workroot) == []


PASSWORD_DRILLS = """
import psycopg
import pytest


@pytest.mark.parametrize("round_", range(20))
def test_logins_{i}(restored_postgres, round_):
    for dsn in (restored_postgres.dsn, restored_postgres.dsn_for(user="postgres", dbname="template1")):
        with psycopg.connect(dsn) as conn:
            conn.execute("select 1")
"""


def test_four_workers_open_connect_strings_at_once_without_a_collision(pytester, scenario, workroot):
    """Every worker sets the per-run password on first use, all at the moment the shared restore is
    ready: 12 drills x 20 rounds on 4 workers, no "tuple concurrently updated"."""
    pytester.makepyfile(test_drills="".join(PASSWORD_DRILLS.format(i=i) for i in range(12)))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "4", f"--restore-workdir={workroot / 'runs'}",
        f"--restore-source={scenario.file_url}", timeout=240)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=1 + 12 * 20)
    assert "concurrently updated" not in output
    assert leftovers(workroot) == ([], [])
