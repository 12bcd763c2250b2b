"""A split history (issue 19): the newest timeline is not ``latest`` when another line descending
from the backup has archived WAL past its end; a clean failover still follows the newest timeline.
Hand-built catalogs, no I/O (the real-server twins are in tests/integration/test_split_timeline.py)."""

from __future__ import annotations

import pytest
from test_plan import B2, B8, SEG, T, archive, catalog, names, seg_time

from pytest_pgrestore.checks._listing import verify
from pytest_pgrestore.errors import PreflightError
from pytest_pgrestore.restore._plan import SplitTimeline, find_split, make_plan
from pytest_pgrestore.restore._result import Outcome

HIST2 = "1\t0/9800000\tno recovery target specified\n"  # timeline 2 forked inside segment 9


def split_archive():
    """Timeline 2 forked in segment 9 and archived 9..A; timeline 1 went on to segment D."""
    return archive({1: range(2, 0xE), 2: [9, 0xA]}, {2: HIST2})


def failover_archive(parent_last: int = 9):
    """Timeline 2 forked in segment 9 and archived 9..B; the old primary's straggler segment(s) on 1."""
    return archive({1: range(2, parent_last + 1), 2: range(9, 0xC)}, {2: HIST2})


def test_latest_refuses_a_split_naming_both_lines_and_the_fix():
    with pytest.raises(SplitTimeline) as err:
        make_plan(catalog([B2, B8], split_archive()), T("latest"))
    exc = err.value
    assert isinstance(exc, PreflightError)  # a refused drill: exit 1, nothing downloaded
    assert exc.outcome is Outcome.SPLIT_TIMELINE
    assert "timeline 2 ends at 0/B000000 (newest segment 00000002000000000000000A, archived at " \
        f"{seg_time(0xA).isoformat()})" in exc.what
    assert "timeline 1 ends at 0/E000000 (newest segment 00000001000000000000000D, archived at " \
        f"{seg_time(0xD).isoformat()})" in exc.what
    assert "parted at 0/9800000" in exc.what
    assert "--restore-timeline 1" in exc.fix and "--restore-timeline 2" in exc.fix
    assert exc.split.to_dict()["living"]["timeline"] == 1


def test_twin_the_explicit_timeline_is_planned_on_the_same_archive():
    cat = catalog([B2, B8], split_archive())
    plan = make_plan(cat, T("latest"), timeline="1")
    assert plan.timeline == 1 and plan.segments[-1] == "00000001000000000000000D"
    assert plan.archive_end_lsn == 0xE * SEG
    assert make_plan(cat, T("latest"), timeline="2").timeline == 2  # the user may pick the newest too
    assert make_plan(cat, T("latest"), timeline="current").timeline == 1


@pytest.mark.parametrize("parent_last", [9, 0xA, 0xB])
def test_a_clean_failover_follows_the_newest_timeline(parent_last):
    """The old primary's stragglers past the fork, in segments no newer than the new primary's newest."""
    plan = make_plan(catalog([B8], failover_archive(parent_last)), T("latest"))
    assert plan.timeline == 2
    assert plan.segments == names([(1, 8), (2, 9), (2, 0xA), (2, 0xB)])


def test_twin_the_parent_one_segment_past_the_child_is_a_split():
    with pytest.raises(SplitTimeline) as err:
        make_plan(catalog([B8], failover_archive(0xC)), T("latest"))
    assert "timeline 1 ends at 0/D000000" in err.value.what


def test_a_fresh_failover_with_only_the_history_file_is_not_a_split():
    wal = archive({1: range(2, 10)}, {2: HIST2})  # 00000002.history, no segment of 2 yet
    assert find_split(wal, B8, 2) is None  # (the plan then waits for 000000020000000000000009: a gap)
    wal = archive({1: range(2, 11)}, {2: HIST2})  # ... but the old primary filled segment A after the fork
    with pytest.raises(SplitTimeline) as err:
        make_plan(catalog([B8], wal), T("latest"))
    assert "newest segment 000000010000000000000009" in err.value.what  # where line 2 ends: on its parent


def test_a_sibling_that_went_further_is_a_split():
    """A copy restored from timeline 1 (to a time) promoted to 3; production failed over to 2 and went on."""
    wal = archive({1: range(2, 10), 2: range(9, 0x10), 3: [9]},
                  {2: HIST2, 3: "1\t0/9400000\tbefore 2026-11-26 20:09:00+00\n"})
    with pytest.raises(SplitTimeline) as err:
        make_plan(catalog([B8], wal), T("latest"))
    assert "timeline 3 ends at 0/A000000" in err.value.what and "timeline 2 ends at 0/10000000" in err.value.what
    assert "parted at 0/9400000" in err.value.what
    assert make_plan(catalog([B8], wal), T("latest"), timeline="2").timeline == 2


def test_a_branch_that_forked_before_the_backup_does_not_count():
    wal = archive({1: range(2, 10), 2: range(3, 0x20)}, {2: "1\t0/3000000\tno recovery target specified\n"})
    assert make_plan(catalog([B8], wal), T("latest")).timeline == 1
    assert find_split(wal, B8, 1) is None


@pytest.mark.parametrize("text", ["immediate", "lsn:0/9000000", "lsn:0/9800000"])
def test_targets_before_the_fork_are_not_refused(text):
    assert make_plan(catalog([B8], split_archive()), T(text)).timeline == 2


@pytest.mark.parametrize("text", ["lsn:0/9800001", "2026-11-26T20:09:30+00:00", "xid:1234", "name:before"])
def test_targets_past_or_unknown_relative_to_the_fork_are_refused(text):
    with pytest.raises(SplitTimeline):
        make_plan(catalog([B8], split_archive()), T(text))


def test_verify_reports_the_split():
    report = verify(catalog([B2, B8], split_archive()))
    assert not report.ok
    assert any("split history" in p and "--restore-timeline 1" in p for p in report.problems)
    assert report.to_dict()["split_timeline"]["living"]["timeline"] == 1


def test_twin_verify_passes_a_clean_failover():
    report = verify(catalog([B8], failover_archive(0xA)))
    assert report.ok, report.problems
    assert report.problems == [] and report.to_dict()["split_timeline"] is None
