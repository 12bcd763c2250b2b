"""Drill runs end to end: an inner pytest restores a real backup (or fails to) through the plugin.

Every inner run is a subprocess that loads the plugin through its ``pytest11`` entry point and
keeps its run dirs under the test's own ``workroot``; after each one we look for what it left.
One real backup (``scenario``: 7 rows in ``t``, 4 of them in the newest backup) serves all.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
from plugin_support import copy_repo, leftovers, our_postgres_processes, run_dirs, wait_for

from pytest_pgrestore.restore._rundir import list_run_dirs


@pytest.fixture
def run_drills(pytester: pytest.Pytester, workroot: Path, monkeypatch: pytest.MonkeyPatch):
    """``run_drills(*args)`` → RunResult of a subprocess pytest in ``pytester.path``."""
    monkeypatch.setenv("COLUMNS", "400")  # short summary lines whole, not cut at 80 columns

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}", *args, timeout=180
        )

    return run


def assert_nothing_left(workroot: Path) -> None:
    assert leftovers(workroot) == ([], []), "run dirs / postgres processes left behind"


def full_output(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


# -- no source ---------------------------------------------------------------------------
def test_no_source_fails_restore_fixtures_and_lists_where_it_looked(pytester, run_drills, workroot):
    pytester.makepyfile(
        test_drills="""
        def test_drill(restored_db):
            pass

        def test_not_a_drill():
            pass
        """
    )
    result = run_drills("-rA")
    output = full_output(result)
    result.assert_outcomes(passed=1, failed=1, errors=1)
    for line in [
        "FAILED test_drills.py::restore[latest] - no backup source configured",
        "ERROR test_drills.py::test_drill - Failed: restore[latest] failed: no backup source configured",
        "PASSED test_drills.py::test_not_a_drill",
    ]:
        assert line in result.outlines
    looked = (
        "checked: --restore-source, env PGRESTORE_SOURCE, ini restore_source, env WALG_S3_PREFIX, "
        "env WALE_S3_PREFIX, env WALG_FILE_PREFIX"
    )
    assert output.count(looked) == 1  # on the restore item only; the drill names it instead
    assert "there is no default" in output
    assert "Traceback" not in output
    assert_nothing_left(workroot)


# -- a real drill run --------------------------------------------------------------------
DRILLS = """
import psycopg
import pytest

def test_every_row_is_back(restored_db, restore_result):
    assert restore_result.outcome == "REACHED"
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {total}

def test_restored_db_is_read_only(restored_db):
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        restored_db.execute("insert into t (value) values ('not allowed')")

def test_a_writes_into_its_clone(restored_db_writable):
    restored_db_writable.execute("insert into t (value) values ('written by test A')")
    restored_db_writable.commit()
    assert restored_db_writable.execute("select count(*) from t").fetchone()[0] == {total} + 1

def test_b_does_not_see_what_a_wrote(restored_db_writable, restored_db):
    for conn in (restored_db_writable, restored_db):
        assert conn.execute("select count(*) from t where value = 'written by test A'").fetchone()[0] == 0
        assert conn.execute("select count(*) from t").fetchone()[0] == {total}
"""

IMMEDIATE = """
import pytest

pytestmark = pytest.mark.restore_target("immediate")

def test_sees_only_the_rows_of_the_newest_backup(restored_db, restore_result):
    assert restore_result.target == "immediate"
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {in_backup}
"""


def test_drills_pass_against_a_real_backup(pytester, run_drills, scenario, workroot):
    in_newest_backup = scenario.rows_at("c1", len(scenario.commits["c1"]) - 1)
    assert in_newest_backup < scenario.total_rows  # the premise of the immediate module
    pytester.makepyfile(
        test_drills=DRILLS.format(total=scenario.total_rows),
        test_immediate=IMMEDIATE.format(in_backup=in_newest_backup),
    )
    junit = pytester.path / "junit.xml"
    result = run_drills(f"--restore-source={scenario.file_url}", f"--junitxml={junit}", "-v")
    assert result.ret == pytest.ExitCode.OK, full_output(result)
    result.assert_outcomes(passed=7)  # 5 drills + restore[latest] + restore[immediate]

    cases = ET.parse(junit).getroot().findall(".//testcase")
    names = [case.get("name") for case in cases]
    assert names[0] == "restore[latest]"
    assert names.count("restore[latest]") == 1
    assert names.count("restore[immediate]") == 1
    assert (
        names.index("restore[immediate]") == names.index("test_sees_only_the_rows_of_the_newest_backup") - 1
    )
    for case in cases:
        if case.get("name").startswith("restore["):
            props = {p.get("name"): p.get("value") for p in case.iter("property")}
            assert props["restore_outcome"] == "REACHED", props
            assert props["restore_backup"] == scenario.backups["b2"].name
    summary = result.outlines[
        [i for i, line in enumerate(result.outlines) if " restore drills " in line][0] :
    ]
    for label in ("restore[latest]", "restore[immediate]"):
        assert any(
            line.startswith(f"{label} REACHED: backup {scenario.backups['b2'].name}") for line in summary
        )
    assert_nothing_left(workroot)


# -- restores that fail ------------------------------------------------------------------
def _gap(scenario, root: Path) -> tuple[list[str], str]:
    repo = copy_repo(scenario, root / "gap-repo")
    needed = sorted(p for p in (repo / "wal").iterdir() if len(p.name) == 24)[-2]  # newest backup's start
    needed.unlink()
    return [f"--restore-source=file://{repo}"], f"missing from the archive: {needed.name}"


def _past_the_end(scenario, root: Path) -> tuple[list[str], str]:
    target = (scenario.commits["c2"][-1].time + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    return [
        f"--restore-source={scenario.file_url}",
        f"--restore-target={target}",
    ], "past the end of the archive"


def _ends_early(scenario, root: Path) -> tuple[list[str], str]:
    """Inside the listing's range, after the last commit: only replay can tell (server started)."""
    target = (scenario.commits["c2"][-1].time + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    return [f"--restore-source={scenario.file_url}", f"--restore-target={target}"], "ended ENDED_EARLY"


@pytest.mark.parametrize(
    "defect, outcome",
    [
        pytest.param(_gap, "REFUSED_PREFLIGHT", id="missing-segment"),
        pytest.param(_past_the_end, "REFUSED_PREFLIGHT", id="target-past-the-archive"),
        pytest.param(_ends_early, "ENDED_EARLY", id="target-after-the-last-commit"),
    ],
)
def test_failed_restore_fails_its_item_once_and_errors_each_drill(
    pytester, run_drills, scenario, workroot, defect, outcome
):
    args, what = defect(scenario, workroot)
    pytester.makepyfile(
        test_drills="""
        def test_one(restored_db):
            pass

        def test_two(restored_postgres):
            pass

        def test_not_a_drill():
            pass
        """
    )
    result = run_drills(*args, "-rA")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(failed=1, errors=2, passed=1)
    label = [line for line in result.outlines if line.startswith("FAILED ")][0].split("::")[1].split(" ")[0]
    assert label.startswith("restore[")
    assert what in output
    assert output.count("  checked: ") == 1 and output.count("  fix: ") == 1, "restore message repeated"
    for drill in ("test_one", "test_two"):
        prefix = f"ERROR test_drills.py::{drill} - Failed: {label} failed ({outcome}): "
        assert any(line.startswith(prefix) for line in result.outlines), prefix
    assert "Traceback" not in output
    assert "During handling of the above exception" not in output
    assert_nothing_left(workroot)


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_s3_endpoint_is_named(pytester, run_drills, monkeypatch, closed_port, workroot):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "drill")  # past the credential check, on to the network
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "drill-secret")
    pytester.makepyfile("def test_drill(restored_db): pass")
    result = run_drills("--restore-source=s3://drill-bucket/pg/main")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(failed=1, errors=1)
    assert f"cannot connect to S3 endpoint http://127.0.0.1:{closed_port} (env AWS_ENDPOINT_URL)" in output
    assert "s3://drill-bucket/pg/main/" in output
    assert "drill-secret" not in output
    assert "Traceback" not in output


def test_an_endpoint_password_is_shown_nowhere(pytester, run_drills, monkeypatch, closed_port, workroot):
    """AWS_ENDPOINT_URL=http://user:password@host: refused, and the password is in no output,
    report or evidence (its twin, the same endpoint without credentials, is the test above)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://drill:endpoint-pw-123@127.0.0.1:{closed_port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "drill")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "drill-secret")
    pytester.makepyfile("def test_drill(restored_db): pass")
    junit, evidence = workroot / "junit.xml", workroot / "evidence.json"
    result = run_drills("--restore-source=s3://drill-bucket/pg/main", f"--junitxml={junit}",
                        f"--restore-report={evidence}")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "the S3 endpoint in env AWS_ENDPOINT_URL carries credentials (user:password@)" in output
    for text in (output, junit.read_text(), evidence.read_text()):
        assert "endpoint-pw-123" not in text and "drill-secret" not in text
    assert "Traceback" not in output
    assert_nothing_left(workroot)


def test_source_without_a_backup_names_the_path(pytester, run_drills, workroot):
    empty = workroot / "no-backups-here"
    empty.mkdir()
    pytester.makepyfile("def test_drill(restored_db): pass")
    result = run_drills(f"--restore-source=file://{empty}")
    output = full_output(result)
    result.assert_outcomes(failed=1, errors=1)
    assert f"no backup found under file://{empty}" in output
    assert "Traceback" not in output
    assert_nothing_left(workroot)


# -- interrupted and killed runs ---------------------------------------------------------
SLEEPER = """
import time
from pathlib import Path

def test_drill_that_takes_long(restored_db):
    restored_db.execute("select 1")
    Path({started!r}).write_text("restored")
    time.sleep(30)
"""


def start_sleeping_drill(pytester, scenario, workroot: Path) -> tuple[subprocess.Popen, Path]:
    """An inner pytest (not pytester's: it must be signalled) sleeping in a drill after the restore."""
    started = workroot / "drill-started"
    pytester.makepyfile(test_sleeper=SLEEPER.format(started=str(started)))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--restore-source={scenario.file_url}",
        f"--restore-workdir={workroot / 'runs'}",
        "test_sleeper.py",
    ]
    proc = subprocess.Popen(argv, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if not wait_for(lambda: started.exists() or proc.poll() is not None, 60):
        proc.kill()
    if not started.exists():
        proc.kill()
        pytest.fail(f"the drill never started:\n{proc.communicate()[0].decode(errors='replace')}")
    assert len(run_dirs(workroot)) == 1 and our_postgres_processes(workroot), "premise: a restore is running"
    return proc, started


def test_ctrl_c_stops_postgres_and_removes_the_run_dir(pytester, scenario, workroot):
    proc, _ = start_sleeping_drill(pytester, scenario, workroot)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert_nothing_left(workroot)


INTERRUPT_AT = """
import os
import signal

import time

from pytest_pgrestore import _faults
from pytest_pgrestore.formats import _tar_materialize as tar_materialize

_extract = tar_materialize.extract_tar


def _slow_extract(*args, **kwargs):  # a download thread is still busy when the interrupt is handled
    time.sleep(1)
    return _extract(*args, **kwargs)


tar_materialize.extract_tar = _slow_extract


def _ctrl_c():
    _faults.disarm()
    {how}

_faults.arm({point!r}, _ctrl_c)


def pytest_sessionfinish(session):  # after the interrupted restore's cleanup: which download threads still run
    import threading

    with open({threads!r}, "w") as f:
        f.write("\\n".join(t.name for t in threading.enumerate() if "-fetch" in t.name))
"""


@pytest.mark.parametrize("how", [
    pytest.param("raise KeyboardInterrupt", id="raised"),
    pytest.param("os.kill(os.getpid(), signal.SIGINT)", id="signal"),  # delivered wherever Python runs it next
])
@pytest.mark.parametrize("point", [
    "rundir.created",  # inside RunDir.create, once the directory exists
    "attempt.rundir",  # after RunDir.create returned, before the attempt's cleanup covers it
    "jobs.started",  # while the materialize step starts its download threads (one is extracting)
])
def test_ctrl_c_during_the_restore_leaves_nothing(pytester, run_drills, scenario, workroot, point, how):
    """A Ctrl-C at each place that used to leak the run dir (or a thread still extracting into it)."""
    threads = workroot / "threads-left"
    pytester.makeconftest(INTERRUPT_AT.format(point=point, how=how, threads=str(threads)))
    pytester.makepyfile("def test_drill(restored_db): pass")
    result = run_drills(f"--restore-source={scenario.file_url}")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert threads.read_text() == "", "download threads still running after the restore was cleaned up"
    time.sleep(0.5)  # a thread left running would write into the run dir again by now
    assert_nothing_left(workroot)


def test_ctrl_c_at_a_random_moment_of_the_restore_leaves_nothing(pytester, scenario, workroot):
    """The same, from outside and at no chosen place: the first moment a run dir exists."""
    pytester.makepyfile("def test_drill(restored_db): pass")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        f"--restore-source={scenario.file_url}",
        f"--restore-workdir={workroot / 'runs'}",
    ]
    proc = subprocess.Popen(argv, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert wait_for(lambda: run_dirs(workroot), 60, interval=0.002), "premise: a restore started"
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert_nothing_left(workroot)


def test_sigkill_of_the_harness_lets_the_supervisor_clean_up(pytester, scenario, workroot):
    proc, _ = start_sleeping_drill(pytester, scenario, workroot)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)  # reaped: a zombie's /proc entry would still look alive to the supervisor
    if not wait_for(lambda: not our_postgres_processes(workroot), 10):
        pytest.fail("postgres still runs 10 s after the harness was killed")  # not covered by the xfail
    assert wait_for(lambda: not run_dirs(workroot), 10), f"left behind: {run_dirs(workroot)}"


# -- keep --------------------------------------------------------------------------------
def test_keep_always_leaves_the_server_and_says_how_to_reach_it(pytester, run_drills, scenario, workroot):
    pytester.makepyfile("def test_drill(restored_db): restored_db.execute('select 1')")
    result = run_drills(f"--restore-source={scenario.file_url}", "--restore-keep=always")
    try:
        output = full_output(result)
        assert result.ret == pytest.ExitCode.OK, output
        (name,) = run_dirs(workroot)
        run_dir = workroot / "runs" / name
        assert f"KEPT on purpose: {run_dir} holds a copy of production data" in output
        assert any(
            line.startswith("  connect: psql -h ")
            and f"stop: kill -INT $(cat {run_dir}/supervisor.pid)" in line
            for line in result.outlines
        ), output
        pid = int((run_dir / "supervisor.pid").read_text())
        assert not wait_for(lambda: not Path(f"/proc/{pid}").exists(), 1.5), "kept server stopped"
    finally:
        for run_dir in list_run_dirs(workroot / "runs"):
            try:
                os.kill(int((run_dir / "supervisor.pid").read_text()), signal.SIGINT)
            except (OSError, ValueError):
                pass
        assert wait_for(lambda: not our_postgres_processes(workroot), 30)
        shutil.rmtree(workroot / "runs", ignore_errors=True)


# -- workdirs a shell would split ---------------------------------------------------------
ODD_WORKDIR_DRILL = """
def test_drill(restored_db, restore_result):
    assert restore_result.outcome == "REACHED"
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {total}
"""


@pytest.mark.parametrize("folder", ["with space", "it's", "100% sure", "$(touch pwned)"])
@pytest.mark.parametrize("defect", [None, _ends_early], ids=["reached", "twin-ends-early"])
def test_a_workdir_with_shell_characters_restores(pytester, run_drills, scenario, workroot, folder, defect):
    """The workdir reaches the supervisor and restore_command as one path: the healthy drill is
    REACHED, and its twin (a target after the last commit) fails by its verdict, not by the shell."""
    workdir = workroot / folder / "runs"
    args = defect(scenario, workroot)[0] if defect else [f"--restore-source={scenario.file_url}"]
    pytester.makepyfile(ODD_WORKDIR_DRILL.format(total=scenario.total_rows))
    result = run_drills(*args, f"--restore-workdir={workdir}")  # the later --restore-workdir wins
    output = full_output(result)
    if defect is None:
        assert result.ret == pytest.ExitCode.OK, output
        result.assert_outcomes(passed=2)
    else:
        assert result.ret == pytest.ExitCode.TESTS_FAILED, output
        assert "ended ENDED_EARLY" in output
    assert "Traceback" not in output
    assert not (pytester.path / "pwned").exists() and not Path("pwned").exists()
    assert list_run_dirs(workdir) == []
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_holds(pid, str(workdir))]


def _cmdline_holds(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- preload ------------------------------------------------------------------------------
PRELOAD_DRILLS = """
import pytest

def test_without(restored_db):
    assert restored_db.execute("show shared_preload_libraries").fetchone()[0] == ""

@pytest.mark.restore_target("latest", preload="pg_stat_statements")
def test_with(restored_db):
    assert restored_db.execute("show shared_preload_libraries").fetchone()[0] == "pg_stat_statements"
"""


def test_a_preload_marker_gets_its_own_restore_and_the_item_names_it(pytester, run_drills, scenario, workroot):
    pytester.makepyfile(PRELOAD_DRILLS)
    junit = pytester.path / "junit.xml"
    result = run_drills(f"--restore-source={scenario.file_url}", f"--junitxml={junit}", "-rA")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=4)  # two restores: the same source and target, two preload lists
    assert "restore[latest;preload=pg_stat_statements] REACHED" in output
    assert ("  preload: the backup's configuration preloads no library; kept: pg_stat_statements"
            in result.outlines)
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["restore_preload"].endswith("kept: pg_stat_statements")
    assert_nothing_left(workroot)


# -- a workdir the user already has --------------------------------------------------------
def test_a_shared_1777_workdir_keeps_its_mode(pytester, run_drills, scenario, workroot):
    """--restore-workdir=/tmp-like: the restore runs inside it and its mode (sticky, world
    writable) is never changed; the run dirs inside are the product's own (issue 18 item 4)."""
    shared = workroot / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    pytester.makepyfile(ODD_WORKDIR_DRILL.format(total=scenario.total_rows))
    result = run_drills(f"--restore-source={scenario.file_url}", f"--restore-workdir={shared}")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.OK, output
    assert oct(shared.stat().st_mode & 0o7777) == oct(0o1777)
    assert list_run_dirs(shared) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a server user other than us exists only when root runs it")
def test_twin_a_workdir_the_server_user_cannot_reach_is_refused_and_kept(pytester, run_drills, scenario, workroot):
    """Before, a root-only 0700 workdir was chmodded to 0755; now it keeps its mode and the
    restore is refused, naming it."""
    private = workroot / "root-only"
    private.mkdir()
    private.chmod(0o700)
    pytester.makepyfile(ODD_WORKDIR_DRILL.format(total=scenario.total_rows))
    result = run_drills(f"--restore-source={scenario.file_url}", f"--restore-workdir={private}")
    output = full_output(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert f"cannot reach --restore-workdir {private}: {private} (mode 0700, owner uid 0)" in output
    assert oct(private.stat().st_mode & 0o7777) == oct(0o700)
    assert list(private.iterdir()) == []
    assert "Traceback" not in output
