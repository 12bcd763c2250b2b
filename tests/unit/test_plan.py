"""catalog.WalArchive timeline reasoning and plan.make_plan on hand-built catalogs (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import pytest

from pytest_pgrestore.errors import PreflightError, UsageError
from pytest_pgrestore.formats._catalog import Backup, Catalog, WalArchive, WalSegment
from pytest_pgrestore.formats._wal import parse_history, segment_name
from pytest_pgrestore.restore._plan import ARCHIVE_END_MARGIN, MIN_MAJOR, make_plan
from pytest_pgrestore.settings._target import RestoreTarget, TargetError, format_lsn

UTC = timezone.utc
MB = 1 << 20
SEG = 16 * MB
T0 = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)


def seg_time(segno: int) -> datetime:
    """Segment N of the test archives was archived at T0 + N minutes."""
    return T0 + timedelta(minutes=segno)


def archive(
    segments: dict[int, Iterable[int]], histories: dict[int, str] | None = None, *, size: int = SEG
) -> WalArchive:
    wal = WalArchive(segment_size=size)
    for tli, segnos in segments.items():
        for s in segnos:
            name = segment_name(tli, s, size)
            wal.segments.setdefault(tli, {})[s] = WalSegment(
                tli, s, f"wal/{name}.zst", size // 3, seg_time(s)
            )
    for tli, text in (histories or {}).items():
        wal.histories[tli] = parse_history(text)
        wal.history_keys[tli] = f"wal/{tli:08X}.history"
    return wal


def backup(segno: int, *, tli: int = 1, size: int = SEG, **kw) -> Backup:
    """A backup whose WAL starts and stops inside segment ``segno`` (stop 30 s after its start)."""
    start = segno * size + 0x28
    fields = dict(
        name=f"20261126T20{segno:02d}00",
        format="basebackup",
        start_lsn=start,
        stop_lsn=start + 0xD8,
        timeline=tli,
        start_time=seg_time(segno),
        stop_time=seg_time(segno) + timedelta(seconds=30),
        pg_major=16,
        segment_size=size,
    )
    fields.update(kw)
    return Backup(**fields)


def catalog(backups: list[Backup], wal: WalArchive) -> Catalog:
    return Catalog(
        source="s3://drills/main",
        format="basebackup",
        backups=sorted(backups, key=lambda b: b.stop_lsn),
        wal=wal,
    )


B2, B5, B8 = backup(2), backup(5), backup(8)


@pytest.fixture
def cat() -> Catalog:
    """Three backups (in segments 2, 5 and 8) and timeline 1 archived from 2 to 9."""
    return catalog([B2, B5, B8], archive({1: range(2, 10)}))


def T(text: str) -> RestoreTarget:
    return RestoreTarget.parse(text)


def names(tli_segnos, size=SEG) -> list[str]:
    return [segment_name(t, s, size) for t, s in tli_segnos]


# -- WalArchive: timelines and ancestry ------------------------------------------------------

HIST2 = "1\t0/9800000\tno recovery target specified\n"  # timeline 2 forked inside segment 9
HIST3 = HIST2 + "2\t0/B000000\tbefore 2026-11-26 20:40:00.5+00\n"  # 3 forked at the start of segment B


def test_timelines_and_newest_segment():
    wal = archive({1: [2, 3, 9], 2: [9, 10]}, {2: HIST2, 3: HIST3})
    assert wal.timelines() == [1, 2, 3]
    assert wal.newest_segno(1) == 9
    assert wal.newest_segno(2) == 10
    assert wal.newest_segno(3) == 10  # nothing on 3 yet (a failover): the newest on its path
    assert wal.newest_segno(7) is None


def test_ancestry():
    wal = archive({1: [2]}, {2: HIST2, 3: HIST3})
    assert wal.ancestry(1) == [(1, 0, None)]
    assert wal.ancestry(2) == [(1, 0, 0x9800000), (2, 0x9800000, None)]
    assert wal.ancestry(3) == [(1, 0, 0x9800000), (2, 0x9800000, 0xB000000), (3, 0xB000000, None)]


def test_ancestry_of_a_timeline_without_history_is_unknown():
    wal = archive({1: [2], 2: [9]})
    with pytest.raises(KeyError):
        wal.ancestry(2)


@pytest.mark.parametrize(
    ("fork", "descends"),
    [
        (B8.stop_lsn + 1, True),  # forked after the backup was consistent
        (B8.stop_lsn, True),  # forked exactly at its end: replay reaches the end, then switches
        (B8.stop_lsn - 1, False),  # forked while the backup was running
        (0x3000000, False),  # forked long before the backup
    ],
)
def test_descends_from_depends_on_the_fork_and_the_backup_end(fork, descends):
    wal = archive({1: range(2, 10)}, {2: f"1\t{format_lsn(fork)}\treason\n"})
    assert wal.descends_from(2, B8) is descends
    assert wal.descends_from(1, B8) is True


def test_descends_from_unknown_or_foreign_timelines():
    wal = archive({1: range(2, 10), 4: [9]}, {2: HIST2, 3: HIST3})
    assert wal.descends_from(4, B8) is False  # no history: ancestry unknown
    assert wal.descends_from(3, B8) is True  # via 2
    on_two = backup(0xA, tli=2)
    assert wal.descends_from(1, on_two) is False  # a parent never descends from its child
    assert wal.descends_from(3, on_two) is True  # 3 forked from 2 at 0/B000000, after the backup
    late_on_two = backup(0xB, tli=2)
    assert wal.descends_from(3, late_on_two) is False  # 3 forked before that backup ended


def test_needed_segments_read_the_switch_segment_from_the_child():
    wal = archive({1: range(2, 10), 2: range(9, 12)}, {2: HIST2})
    assert wal.needed_segments(2, B8.start_lsn, None) == [(1, 8), (2, 9), (2, 10), (2, 11)]
    assert wal.needed_segments(1, B8.start_lsn, None) == [(1, 8), (1, 9)]


def test_needed_segments_with_a_switch_on_a_segment_boundary():
    wal = archive({1: range(2, 11), 2: range(0xA, 0xD), 3: range(0xB, 0xD)}, {2: HIST2, 3: HIST3})
    assert wal.needed_segments(3, B8.start_lsn, None) == [(1, 8), (2, 9), (2, 10), (3, 11), (3, 12)]


def test_needed_segments_up_to_an_lsn_and_to_consistency():
    wal = archive({1: range(2, 10)})
    assert wal.needed_segments(1, B5.start_lsn, 0x7000010) == [(1, 5), (1, 6), (1, 7)]
    assert wal.needed_segments(1, B5.start_lsn, B5.stop_lsn) == [(1, 5)]
    assert wal.needed_segments(1, B5.start_lsn, 0x7000000) == [(1, 5), (1, 6), (1, 7)]


def test_needed_segments_with_nothing_archived():
    assert archive({}).needed_segments(1, B2.start_lsn, None) == []


def test_missing():
    wal = archive({1: [2, 3, 5], 2: [9]}, {2: HIST2})
    needed = [(1, 2), (1, 3), (1, 4), (1, 5), (1, 6), (2, 9), (2, 10)]
    assert wal.missing(needed) == [(1, 4), (1, 6), (2, 10)]
    assert wal.missing([]) == []


def test_catalog_backup_lookup(cat):
    assert cat.backup(B5.name) is B5
    assert cat.backup("nope") is None


# -- choosing the backup -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["latest", "immediate", "xid:729", "name:before_migration"])
def test_newest_backup_for_latest_immediate_xid_and_name(cat, text):
    plan = make_plan(cat, T(text))
    assert plan.backup is B8
    assert plan.timeline == 1


@pytest.mark.parametrize("text", ["xid:729", "name:before_migration"])
def test_xid_and_name_fall_back_newest_to_oldest(cat, text):
    assert make_plan(cat, T(text)).fallbacks == [B5, B2]


def test_oldest(cat):
    plan = make_plan(cat, T("oldest"))
    assert plan.backup is B2
    assert plan.segments == names([(1, 2)])
    assert plan.recovery["recovery_target"] == "immediate"


def test_backup_by_name(cat):
    plan = make_plan(cat, T(f"backup:{B5.name}"))
    assert plan.backup is B5
    assert plan.segments == names([(1, 5)])
    assert plan.fallbacks == []


def test_unknown_backup_lists_the_names(cat):
    with pytest.raises(PreflightError) as err:
        make_plan(cat, T("backup:20250101T000000"))
    assert "'20250101T000000' is not in s3://drills/main" in err.value.what
    assert err.value.checked == f"3 backups: {B2.name}, {B5.name}, {B8.name}"
    assert "pgrestore list" in err.value.fix


def test_time_picks_the_newest_backup_that_finished_before(cat):
    plan = make_plan(cat, T("2026-11-26T20:06:00Z"))
    assert plan.backup is B5
    assert plan.fallbacks == [B2]
    assert plan.segments == names([(1, s) for s in range(5, 10)])
    # a backup that finished exactly at the target serves it
    assert make_plan(cat, RestoreTarget("time", "t", time=B8.stop_time)).backup is B8
    assert (
        make_plan(cat, RestoreTarget("time", "t", time=B8.stop_time - timedelta(microseconds=1))).backup is B5
    )


def test_time_in_another_offset_compares_as_an_instant(cat):
    # 22:06:00+02:00 is 20:06:00Z
    assert make_plan(cat, T("2026-11-26T22:06:00+02:00")).backup is B5


def test_lsn_picks_the_newest_backup_consistent_before(cat):
    assert make_plan(cat, T("lsn:0/7000000")).backup is B5
    assert make_plan(cat, T(f"lsn:{format_lsn(B8.stop_lsn)}")).backup is B8
    assert make_plan(cat, T(f"lsn:{format_lsn(B8.stop_lsn - 1)}")).backup is B5


def test_lsn_plan_stops_at_the_target_segment(cat):
    plan = make_plan(cat, T("lsn:0/7000148"))
    assert plan.segments == names([(1, 5), (1, 6), (1, 7)])
    assert plan.segment_keys == {n: f"wal/{n}.zst" for n in plan.segments}


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        (f"xid:729@backup:{B2.name}", B2),
        (f"name:x@backup:{B5.name}", B5),
        (f"2026-11-26T20:09:00Z@backup:{B2.name}", B2),
        (f"lsn:0/9000000@backup:{B5.name}", B5),
    ],
)
def test_pinned_backup(cat, text, pinned):
    plan = make_plan(cat, T(text))
    assert plan.backup is pinned
    assert plan.fallbacks == []


def test_pin_to_an_unknown_backup(cat):
    with pytest.raises(PreflightError, match="'gone' is not in"):
        make_plan(cat, T("xid:729@backup:gone"))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"2026-11-26T20:03:00Z@backup:{B5.name}", "before backup"),
        (f"lsn:0/3000000@backup:{B5.name}", "before backup"),
    ],
)
def test_pinned_backup_that_ends_after_the_target(cat, text, why):
    # PostgreSQL would stop with "requested recovery stop point is before consistent recovery point"
    with pytest.raises(PreflightError, match=why) as err:
        make_plan(cat, T(text))
    assert B5.name in err.value.what


def test_forced_backup_for_a_retry(cat):
    plan = make_plan(cat, T("xid:729"), backup=B5)
    assert plan.backup is B5
    assert plan.fallbacks == [B2]
    assert plan.segments == names([(1, s) for s in range(5, 10)])


# -- bare backup names: the tools' schemes at once, any other name once the listing has it --------

WALG_FULL = "base_000000010000000000000002"
NAMING_SCHEMES = [
    WALG_FULL,  # WAL-G full
    "base_000000010000000000000005_D_000000010000000000000002",  # WAL-G delta
    "20261120-120000F",  # pgBackRest full
    "20261120-120000F_20261120-130000D",  # pgBackRest differential
    "20261120-120000F_20261120-130000I",  # pgBackRest incremental
    "20261120T120000",  # barman, and pg_basebackup folders named the usual way
    "20261207T204321Z",  # user-chosen folder names: ISO 8601 basic with Z,
    "nightly-2026-12-07",  # a label with a date,
    "2026-12-07_0300",  # a date and a clock time
]


def named(first: str, middle: str, last: str) -> Catalog:
    """The three test backups renamed, oldest first (``middle`` is B5)."""
    renamed = [backup(2, name=first), backup(5, name=middle), backup(8, name=last)]
    return catalog(renamed, archive({1: range(2, 10)}))


@pytest.mark.parametrize("name", NAMING_SCHEMES)
def test_a_bare_backup_name_of_any_scheme_is_that_backup(name):
    cat = named("20261101T000000", name, "20261201T000000")
    target = T(name)
    plan = make_plan(cat, target)
    assert plan.backup.name == name and plan.backup.start_lsn == B5.start_lsn
    assert plan.segments == names([(1, 5)])
    assert plan.recovery["recovery_target"] == "immediate"
    assert plan.fallbacks == []
    assert make_plan(cat, T(f"backup:{name}")).backup is plan.backup  # the unambiguous spelling


@pytest.mark.parametrize("name", NAMING_SCHEMES[6:])
def test_twin_a_user_chosen_name_that_no_backup_has_is_the_original_usage_error(name):
    cat = named("20261101T000000", name + "x", "20261201T000000")  # one character off
    with pytest.raises(TargetError) as err:
        make_plan(cat, RestoreTarget.parse(name, origin="env PGRESTORE_TARGET"))
    original = RestoreTarget.parse(name).refusal()
    assert isinstance(err.value, UsageError) and not isinstance(err.value, PreflightError)
    assert err.value.what == original.what.replace("--restore-target", "env PGRESTORE_TARGET")
    assert err.value.fix == original.fix
    assert err.value.checked == (f"{original.checked}; nor is it the name of a backup in s3://drills/main "
                                 f"(3 backups: 20261101T000000, {name}x, 20261201T000000)")


def test_twin_compact_time_names_no_backup_refused_as_before(cat):
    with pytest.raises(TargetError) as err:
        make_plan(cat, T("20261207T204321Z"))
    assert err.value.what == (
        "invalid restore target '20261207T204321Z' (from --restore-target): it is not in "
        "RFC 3339 form (YYYY-MM-DDTHH:MM:SS[.frac] then Z or ±hh:mm)"
    )
    assert err.value.fix == "write 2026-12-07T20:43:21Z"
    assert f"3 backups: {B2.name}, {B5.name}, {B8.name}" in err.value.checked


def test_twin_a_tool_scheme_name_that_no_backup_has_is_a_preflight_refusal(cat):
    # the grammar knows these names as backup names: a missing one is a fact of the listing (exit 1)
    with pytest.raises(PreflightError, match="backup '20250101T000000' is not in s3://drills/main"):
        make_plan(cat, T("20250101T000000"))


def test_a_tentative_name_in_an_empty_source_is_still_the_usage_error():
    with pytest.raises(TargetError) as err:
        make_plan(catalog([], archive({1: range(2, 10)})), T("2026-11-20T12:00:00"))
    assert "no UTC offset" in err.value.what and err.value.fix.startswith("add Z for UTC")
    assert err.value.checked.endswith("nor is it the name of a backup in s3://drills/main (it holds none)")


def test_a_naive_time_that_names_a_backup_is_that_backup():
    cat = named("2026-11-26T20:00:00", "2026-11-26T20:05:00", "2026-11-26T20:08:00")
    plan = make_plan(cat, T("2026-11-26T20:05:00"))
    assert plan.backup.name == "2026-11-26T20:05:00" and plan.recovery["recovery_target"] == "immediate"


def test_keywords_and_times_keep_their_meaning_beside_folders_of_that_name():
    cat = named("oldest", "latest", "2026-11-26T20:06:00Z")
    latest = make_plan(cat, T("latest"))
    assert latest.backup.name == "2026-11-26T20:06:00Z" and "recovery_target" not in latest.recovery
    assert make_plan(cat, T("oldest")).backup.name == "oldest"
    at = make_plan(cat, T("2026-11-26T20:06:00Z"))  # a time: the newest backup finished before it
    assert at.backup.name == "latest" and "recovery_target_time" in at.recovery
    assert make_plan(cat, T("backup:latest")).backup.name == "latest"
    assert make_plan(cat, T("backup:2026-11-26T20:06:00Z")).backup.name == "2026-11-26T20:06:00Z"


# -- the plan: segments, archive end, recovery settings -------------------------------------------


def test_latest_plan(cat):
    plan = make_plan(cat, T("latest"))
    assert plan.segments == ["000000010000000000000008", "000000010000000000000009"]
    assert plan.segment_keys["000000010000000000000009"] == "wal/000000010000000000000009.zst"
    assert plan.archive_end_lsn == 0xA000000
    assert plan.recovery == {"recovery_target_timeline": "1", "recovery_target_action": "promote"}


def test_immediate_plan(cat):
    plan = make_plan(cat, T("immediate"))
    assert plan.segments == ["000000010000000000000008"]
    assert plan.recovery == {
        "recovery_target_timeline": "1",
        "recovery_target_action": "promote",
        "recovery_target": "immediate",
    }


@pytest.mark.parametrize(
    ("text", "inclusive", "expected"),
    [
        (
            "2026-11-26T20:06:00Z",
            True,
            {"recovery_target_time": "2026-11-26T20:06:00+00:00", "recovery_target_inclusive": "on"},
        ),
        (
            "2026-11-26T22:06:00.25+02:00",
            False,
            {"recovery_target_time": "2026-11-26T22:06:00.250000+02:00", "recovery_target_inclusive": "off"},
        ),
        ("lsn:0/7000148", True, {"recovery_target_lsn": "0/7000148", "recovery_target_inclusive": "on"}),
        ("lsn:0/7000148", False, {"recovery_target_lsn": "0/7000148", "recovery_target_inclusive": "off"}),
        ("xid:729", True, {"recovery_target_xid": "729", "recovery_target_inclusive": "on"}),
        ("xid:729", False, {"recovery_target_xid": "729", "recovery_target_inclusive": "off"}),
        ("name:before migration", True, {"recovery_target_name": "before migration"}),
        ("name:before migration", False, {"recovery_target_name": "before migration"}),
        ("oldest", True, {"recovery_target": "immediate"}),
    ],
)
def test_recovery_settings(cat, text, inclusive, expected):
    plan = make_plan(cat, T(text), inclusive=inclusive)
    assert plan.recovery == {"recovery_target_timeline": "1", "recovery_target_action": "promote", **expected}


def test_plan_with_one_megabyte_segments():
    size = MB
    b = backup(0x90, size=size)
    plan = make_plan(catalog([b], archive({1: range(0x90, 0x1001)}, size=size)), T("latest"))
    assert plan.segments[0] == "000000010000000000000090"
    assert plan.segments[-2:] == ["000000010000000000000FFF", "000000010000000100000000"]
    assert len(plan.segments) == 0x1001 - 0x90
    assert plan.archive_end_lsn == 0x1001 * MB


# -- timelines ---------------------------------------------------------------------------------------


def test_latest_follows_the_newest_timeline_across_the_switch():
    wal = archive({1: range(2, 10), 2: range(9, 12)}, {2: HIST2})
    plan = make_plan(catalog([B2, B5, B8], wal), T("latest"))
    assert plan.timeline == 2
    assert plan.segments == [
        "000000010000000000000008",
        "000000020000000000000009",
        "00000002000000000000000A",
        "00000002000000000000000B",
    ]
    assert plan.archive_end_lsn == 0xC000000
    assert plan.recovery["recovery_target_timeline"] == "2"


def test_latest_ignores_a_branch_that_forked_before_the_backup():
    wal = archive({1: range(2, 10), 2: [3, 4]}, {2: "1\t0/3000000\tno recovery target specified\n"})
    plan = make_plan(catalog([B2, B5, B8], wal), T("latest"))
    assert plan.timeline == 1
    # ... while the oldest backup, taken before the fork, follows it
    assert make_plan(catalog([B2, B5, B8], wal), T("latest"), backup=B2, timeline="2").timeline == 2  # (latest: a split)


def test_current_timeline_is_the_backups():
    wal = archive({1: range(2, 10), 2: range(9, 12)}, {2: HIST2})
    plan = make_plan(catalog([B8], wal), T("latest"), timeline="current")
    assert plan.timeline == 1
    assert plan.segments == names([(1, 8), (1, 9)])


def test_explicit_timeline_that_descends():
    wal = archive({1: range(2, 10), 2: range(9, 12)}, {2: HIST2})
    assert make_plan(catalog([B8], wal), T("latest"), timeline="2").timeline == 2
    assert make_plan(catalog([B8], wal), T("latest"), timeline="1").timeline == 1


def test_explicit_timeline_that_does_not_descend():
    wal = archive({1: range(2, 10), 2: [3, 4]}, {2: "1\t0/3000000\tno recovery target specified\n"})
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([B8], wal), T("latest"), timeline="2")
    assert err.value.what == f"timeline 2 is not reachable from backup {B8.name} (timeline 1)"
    assert "00000002.history" in err.value.checked
    assert "--restore-timeline=latest" in err.value.fix


def test_orphan_timeline_under_latest():
    wal = archive({1: range(2, 10), 2: range(9, 12)})  # segments of 2, but no 00000002.history
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([B8], wal), T("latest"))
    assert "timeline 2 has archived WAL but no 00000002.history" in err.value.what
    assert "history files in the archive: none" in err.value.checked
    assert "timelines with segments: [1, 2]" in err.value.checked
    assert "--restore-timeline=1" in err.value.fix
    # pinning the older branch is the documented way out
    assert make_plan(catalog([B8], wal), T("latest"), timeline="1").timeline == 1


# -- preflight refusals --------------------------------------------------------------------------------


def test_empty_catalog():
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([], archive({1: range(2, 10)})), T("latest"))
    assert err.value.what == "no backup found in s3://drills/main"
    assert "basebackup" in err.value.checked


def test_time_before_the_oldest_backup_finished(cat):
    with pytest.raises(PreflightError) as err:
        make_plan(cat, T("2026-11-26T20:02:00Z"))
    assert (
        f"is before the oldest backup finished ({B2.name} ended at 2026-11-26T20:02:30+00:00)"
        in err.value.what
    )
    assert "2026-11-26T20:02:30+00:00" in err.value.fix


def test_lsn_before_the_oldest_backup_end(cat):
    with pytest.raises(PreflightError) as err:
        make_plan(cat, T("lsn:0/2000028"))
    assert f"before the oldest backup's end ({B2.name} is consistent at 0/2000100)" in err.value.what
    assert err.value.fix == "choose an LSN at or after 0/2000100"


@pytest.mark.parametrize("lsn", ["0/A000000", "0/A000028", "1/0"])
def test_lsn_past_the_archive(cat, lsn):
    # the archive ends with segment 9 at 0/A000000: recovery would need a record starting there
    with pytest.raises(PreflightError) as err:
        make_plan(cat, T(f"lsn:{lsn}"))
    assert "past the newest archived WAL on timeline 1 (archive ends at 0/A000000)" in err.value.what


def test_lsn_at_the_end_of_the_last_page_is_still_inside(cat):
    assert make_plan(cat, T("lsn:0/9FFFFF0")).segments[-1] == "000000010000000000000009"


def test_time_past_the_archive_end(cat):
    last = seg_time(9)
    assert make_plan(cat, RestoreTarget("time", "t", time=last + ARCHIVE_END_MARGIN)).backup is B8
    with pytest.raises(PreflightError) as err:
        make_plan(cat, RestoreTarget("time", "t", time=last + ARCHIVE_END_MARGIN + timedelta(seconds=1)))
    assert f"was archived at {last.isoformat()}" in err.value.what
    assert "plus a 0:05:00 margin" in err.value.checked


def test_wal_gap_names_the_segment_and_the_reachable_range():
    wal = archive({1: [2, 3, 4, 5, 6, 8, 9]})
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([B2, B5], wal), T("latest"))
    assert (
        err.value.what == "WAL needed for target latest is missing from the archive: 000000010000000000000007"
    )
    assert (
        "segments 000000010000000000000005 … 000000010000000000000009 from backup "
        f"{B5.name} along timeline 1; reachable without a gap up to 0/7000000"
    ) == err.value.checked


def test_many_missing_segments_are_counted():
    wal = archive({1: [2, 3, 20]})
    with pytest.raises(PreflightError, match=r"000000010000000000000008 … \(16 in all\)"):
        make_plan(catalog([B2], wal), T("latest"))


def test_gap_inside_the_backup_itself():
    with pytest.raises(PreflightError, match="missing from the archive: 000000010000000000000005"):
        make_plan(catalog([B2, B5], archive({1: [2, 3, 4, 6]})), T("immediate"))


def test_gap_after_an_lsn_target_does_not_matter():
    plan = make_plan(catalog([B2], archive({1: [2, 3, 4, 9]})), T("lsn:0/4000100"))
    assert plan.segments == names([(1, 2), (1, 3), (1, 4)])


def test_missing_switch_segment_on_the_child_timeline():
    wal = archive({1: range(2, 10), 2: [10, 11]}, {2: HIST2})  # 000000020000000000000009 lost
    with pytest.raises(PreflightError, match="missing from the archive: 000000020000000000000009"):
        make_plan(catalog([B8], wal), T("latest"))


@pytest.mark.parametrize("major", [9, 10, 11, 12])
def test_postgresql_before_13_is_refused(major):
    old = backup(8, pg_major=major)
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([old], archive({1: range(8, 10)})), T("latest"))
    assert f"is from PostgreSQL {major}, older than {MIN_MAJOR}" in err.value.what
    assert "promotes silently" in err.value.fix


@pytest.mark.parametrize("major", [13, 18, None])
def test_postgresql_13_and_later_or_unknown_is_accepted(major):
    assert make_plan(catalog([backup(8, pg_major=major)], archive({1: range(8, 10)})), T("latest"))


def test_incremental_backup_is_refused():
    inc = backup(8, incremental=True)
    with pytest.raises(PreflightError) as err:
        make_plan(catalog([B2, inc], archive({1: range(2, 10)})), T("latest"))
    assert "incremental backup that was not combined" in err.value.what
    assert "pg_combinebackup" in err.value.fix


def test_preflight_errors_render_what_checked_and_fix(cat):
    with pytest.raises(PreflightError) as err:
        make_plan(cat, T("lsn:0/2000028"))
    text = str(err.value)
    assert text.splitlines()[1].strip().startswith("checked: stop LSNs of 3 backups")
    assert text.splitlines()[2].strip().startswith("fix: choose an LSN")
