"""A split history against real servers (issue 19): a copy promoted with production's
archive_command pushes timeline 2 into the archive while production goes on writing timeline 1.

``latest`` must not follow the newest timeline then (SPLIT_TIMELINE, refused before any download),
``--restore-timeline 1`` restores production's newest rows, and ``pgrestore verify`` fails; a clean
failover (the old primary's straggler archived after the fork, older than the new primary's newest
WAL) still follows timeline 2 and is REACHED.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from it_support import our_postgres_processes, run_dirs

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.errors import PreflightError
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


def copy_of(src: SourceCluster, workdir: Path) -> SourceCluster:
    """A second cluster from a clean shutdown of ``src``, archiving into the same archive (what a
    restore done by hand with production's archive_command left on does)."""
    copy = SourceCluster(workdir, repo=src.repo, major=src.pg_version)
    copy._prepare_dirs()
    src.stop()
    shutil.copytree(src.pgdata, copy.pgdata, symlinks=True)
    src.start()
    if copy._ids is not None:
        for root, dirs, files in os.walk(copy.pgdata):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                os.lchown(name, *copy._ids)
    copy._write_scripts()
    # production archives its own timeline-1 segments (the copy holds the same names with other bytes
    # in pg_wal); the copy pushes what it writes: the .history file and its timeline-2 segments
    script = copy.workdir / "archive_wal.sh"
    head, rest = script.read_text().split("\n", 1)
    script.write_text(f'{head}\ncase "$2" in 00000001*) exit 0;; esac\n{rest}')
    copy._write_conf()  # its own socket directory, archive_command into the same wal/
    # recovery from the first start: started as a primary, its shutdown would switch WAL and its
    # timeline 1 would differ from production's before the fork
    restore = shlex.quote(str(copy.workdir / "restore_wal.sh")).replace("%", "%%")
    with (copy.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(f"restore_command = '/bin/sh {restore} %f %p'\n")
    (copy.pgdata / "recovery.signal").touch()
    if copy._ids is not None:
        os.lchown(copy.pgdata / "recovery.signal", *copy._ids)
    return copy


def promoted(copy: SourceCluster) -> int:
    """Wait until the copy (started) recovered to the end of the archive and promoted."""
    deadline = time.monotonic() + 60
    while copy._one("SELECT pg_is_in_recovery()")[0]:
        assert time.monotonic() < deadline, copy._log_tail()
        time.sleep(0.02)
    copy.wait_archived(f"{copy.timeline:08X}.history")
    return copy.timeline


def rows(settings) -> tuple[list[str], object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            return [r[0] for r in conn.execute("select value from t order by id")], inst.result


def pgrestore(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    return subprocess.run([sys.executable, "-m", "pytest_pgrestore.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def split(workroot):
    """Production (timeline 1) commits p1..p4, backup between; a copy promoted to timeline 2 archives
    a segment or two with c1; production goes on with p5..p8 over three more segments."""
    root = workroot / "split"
    repo = root / "repo"
    with SourceCluster(root / "src", repo=repo, major=15) as src:
        for v in ("p1", "p2"):
            src.commit_row(value=v)
        src.backup()
        for v in ("p3", "p4"):
            src.commit_row(value=v)
        src.switch_wal()
        with copy_of(src, root / "copy") as copy:
            assert promoted(copy) == 2
            copy.commit_row(value="c1")
            copy.switch_wal()
        for v in ("p5", "p6", "p7", "p8"):  # over three more segments: past the copy's end
            src.commit_row(value=v)
            if v != "p5":
                src.switch_wal()
        assert src.timeline == 1
    return repo


@pytest.fixture(scope="module")
def failover(workroot):
    """A clean failover: the new primary (timeline 2) commits n1..n4 over two segments; the old
    primary's straggler s1 reaches the archive after the fork, in a segment older than the new
    primary's newest."""
    root = workroot / "failover"
    repo = root / "repo"
    with SourceCluster(root / "src", repo=repo, major=15) as old:
        for v in ("p1", "p2"):
            old.commit_row(value=v)
        old.backup()
        for v in ("p3", "p4"):
            old.commit_row(value=v)
        old.switch_wal()
        with copy_of(old, root / "new") as new:
            assert promoted(new) == 2
            for v in ("n1", "n2", "n3"):
                new.commit_row(value=v)
            new.switch_wal()
            new.commit_row(value="n4")
            new.switch_wal()
        old.commit_row(value="s1")  # the straggler, archived late by the old primary
        old.switch_wal()
    return repo


PRODUCTION = ["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]


def test_latest_on_a_split_archive_is_refused_naming_both_timelines(split, settings_factory):
    with pytest.raises(PreflightError) as err:
        rows(settings_factory(f"file://{split}"))
    exc = err.value
    assert exc.result.outcome == "SPLIT_TIMELINE"
    assert "split history" in exc.what
    assert "timeline 2 ends at" in exc.what and "timeline 1 ends at" in exc.what
    assert "newest segment 00000002" in exc.what and "newest segment 00000001" in exc.what
    assert "--restore-timeline 1" in exc.fix
    assert exc.result.bytes_fetched == 0 and "fetch" not in exc.result.phases  # refused before download


def test_twin_the_pinned_timeline_1_restores_every_production_row(split, settings_factory):
    values, result = rows(settings_factory(f"file://{split}", timeline="1"))
    assert (values, result.outcome) == (PRODUCTION, "REACHED")


def test_verify_fails_on_the_split_archive(split):
    out = pgrestore("verify", f"file://{split}")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "split history" in out.stdout and "--restore-timeline 1" in out.stdout
    plan = pgrestore("plan", f"file://{split}", "--target", "latest")
    assert plan.returncode == 1 and "split history" in plan.stderr


def test_latest_after_a_clean_failover_follows_timeline_2(failover, settings_factory):
    values, result = rows(settings_factory(f"file://{failover}"))
    assert (values, result.timeline, result.outcome) == (["p1", "p2", "p3", "p4", "n1", "n2", "n3", "n4"], 2,
                                                         "REACHED")


def test_twin_the_old_primarys_line_has_its_straggler_not_the_new_rows(failover, settings_factory):
    values, result = rows(settings_factory(f"file://{failover}", timeline="1"))
    assert (values, result.outcome) == (["p1", "p2", "p3", "p4", "s1"], "REACHED")


def test_verify_passes_a_clean_failover(failover):
    out = pgrestore("verify", f"file://{failover}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "split" not in out.stdout


def late_split(split: Path, dest: Path) -> tuple[Path, list[Path], Path]:
    """A copy of the split archive as the plan would have seen it before production's last
    timeline-1 segments arrived: timeline 2 looks like a clean failover.  Returns (repo, the hidden
    segments, where they wait)."""
    repo = dest / "repo"
    shutil.copytree(split, repo)
    wal = repo / "wal"
    newest_tl2 = max(p.name[8:24] for p in wal.iterdir() if p.name.startswith("00000002") and len(p.name) >= 24
                     and not p.name.endswith(".history"))
    aside = dest / "aside"
    aside.mkdir()
    hidden = [p for p in wal.iterdir() if p.name.startswith("00000001") and p.name[8:24] >= newest_tl2
              and ".backup" not in p.name]
    assert hidden, "premise: production's timeline 1 went past timeline 2's newest segment"
    for p in hidden:
        p.rename(aside / p.name)
    return repo, hidden, aside


def test_a_split_that_appears_while_the_drill_replays_fails_it(split, workroot, settings_factory):
    """Production's newer timeline-1 segments reach the archive while the drill replays timeline 2
    (which looked like a clean failover at plan time): what replay reached is not latest any more.
    Before, the verdict's fresh listing only moved the archive's end: REACHED with c1 and without
    p5..p8."""
    import threading

    from pytest_pgrestore.errors import RestoreFailed
    from pytest_pgrestore.restore._instance import Hooks

    repo, hidden, aside = late_split(split, workroot / "split-late")
    arrived: list[bool] = []
    lock = threading.Lock()  # the spool delivers from several threads

    def production_goes_on(_name: str) -> None:
        with lock:
            if not arrived:
                for p in hidden:
                    (aside / p.name).rename(p)
                arrived.append(True)

    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(f"file://{repo}"), hooks=Hooks(before_deliver=production_goes_on)).restore():
            pass
    assert arrived, "premise: WAL was delivered"
    result = err.value.result
    assert result.outcome == "SPLIT_TIMELINE" and result.timeline == 2
    assert "after replay, the archive holds a split history" in str(err.value)
    assert "--restore-timeline 1" in str(err.value)


def test_twin_without_production_going_on_the_same_archive_is_a_clean_failover(split, workroot, settings_factory):
    repo, _hidden, _aside = late_split(split, workroot / "split-late-twin")
    values, result = rows(settings_factory(f"file://{repo}"))
    assert result.outcome == "REACHED" and result.timeline == 2
    assert "c1" in values and "p8" not in values
