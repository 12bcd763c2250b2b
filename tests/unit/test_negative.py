"""Which WAL segment the negative control withholds, per target kind (no I/O)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_plan import SEG, archive, backup, catalog, seg_time

from pytest_pgrestore.formats._wal import segment_name
from pytest_pgrestore.restore._negative import NegativeControlFailed, choose_withheld
from pytest_pgrestore.restore._plan import make_plan
from pytest_pgrestore.restore._result import RestoreResult
from pytest_pgrestore.settings._target import RestoreTarget, format_lsn


@pytest.fixture
def cat():
    """Backups in segments 2 and 5; timeline 1 archived from 2 to 9."""
    return catalog([backup(2), backup(5)], archive({1: range(2, 10)}))


def withheld(cat, text: str, healthy: RestoreResult | None = None) -> tuple[str, str]:
    plan = make_plan(cat, RestoreTarget.parse(text))
    name, why = choose_withheld(plan, cat.wal, healthy)
    assert name in plan.segments  # always a segment the plan needs, so the listing has it
    return name, why


def seg(n: int) -> str:
    return segment_name(1, n, SEG)


def test_latest_withholds_the_newest_segment(cat):
    assert withheld(cat, "latest") == (seg(9), "the newest archived segment on timeline 1")


def test_lsn_withholds_the_segment_of_the_target(cat):
    name, why = withheld(cat, f"lsn:{format_lsn(7 * SEG + 100)}")
    assert name == seg(7) and "holds the target" in why


@pytest.mark.parametrize(("text", "segno"), [("immediate", 5), ("oldest", 2), ("backup:20261126T200500", 5)])
def test_consistency_targets_withhold_the_end_of_the_backup(cat, text, segno):
    name, why = withheld(cat, text)
    assert name == seg(segno) and "holds the end of backup" in why


def test_a_backup_ending_on_a_segment_boundary_withholds_the_segment_before():
    b = backup(3, stop_lsn=4 * SEG)  # its end record finishes exactly where segment 4 begins
    cat = catalog([b], archive({1: range(3, 8)}))
    assert withheld(cat, "immediate")[0] == seg(3)


def test_time_target_uses_where_this_runs_restore_stopped(cat):
    target = (seg_time(6) + timedelta(seconds=20)).isoformat()
    healthy = RestoreResult(
        source="s",
        format="basebackup",
        target=str(RestoreTarget.parse(target)),
        replay_lsn=format_lsn(7 * SEG + 0x1234),
    )
    name, why = withheld(cat, target, healthy)
    assert name == seg(7) and "stopped in it" in why


def test_time_target_without_a_restore_uses_the_archive_times(cat):
    target = (seg_time(6) + timedelta(seconds=20)).isoformat()
    name, why = withheld(cat, target)
    assert name == seg(7) and "archived at or after" in why  # segment 6 was archived before the target


def test_a_restore_of_another_target_is_not_used(cat):
    target = (seg_time(6) + timedelta(seconds=20)).isoformat()
    other = RestoreResult(source="s", format="basebackup", target="latest", replay_lsn=format_lsn(9 * SEG))
    assert withheld(cat, target, other)[0] == seg(7)


@pytest.mark.parametrize("text", ["xid:1234", "name:before_migration"])
def test_xid_and_name_without_a_restore_withhold_the_last_planned_segment(cat, text):
    name, why = withheld(cat, text)
    assert name == seg(9) and "only known by replaying" in why


def test_nothing_to_withhold_is_a_clear_failure():
    cat = catalog([backup(3)], archive({1: [3]}))
    plan = make_plan(cat, RestoreTarget.parse("immediate"))
    plan.segments = []
    with pytest.raises(NegativeControlFailed, match="needs no archived WAL"):
        choose_withheld(plan, cat.wal)


# -- the verdict when the backup's first WAL never arrives -------------------------------------
NO_CHECKPOINT = {
    15: "FATAL:  could not locate required checkpoint record",
    18: "FATAL:  could not locate required checkpoint record at 0/4000060",
}


@pytest.mark.parametrize("version", sorted(NO_CHECKPOINT))
@pytest.mark.parametrize("text", ["immediate", "latest", "2026-11-26T20:40:00Z"])
def test_missing_checkpoint_wal_is_ended_early_not_a_start_failure(version, text):
    from test_verdict import down, verdict

    obs = down(
        [
            "LOG:  starting PostgreSQL",
            NO_CHECKPOINT[version],
            'HINT:  If you are restoring from a backup, touch "/run/pgdata/recovery.signal" ...',
            "LOG:  startup process (PID 124) exited with exit code 1",
        ]
    )
    v = verdict(obs, RestoreTarget.parse(text))
    assert v.outcome == "ENDED_EARLY"
    assert "recovery ended before it began" in v.detail and "could not locate required checkpoint" in v.detail
