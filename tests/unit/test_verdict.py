"""verdict.decide on server logs written as PostgreSQL 15, 16 and 18 print them.

The restored server runs with ``log_line_prefix='%m [%p] '`` and ``lc_messages=C``; every
message below is spelled as in the PostgreSQL sources of that version.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pytest_pgrestore.restore._result import Outcome
from pytest_pgrestore.restore._verdict import Observation, decide, scan_log
from pytest_pgrestore.settings._target import RestoreTarget

UTC = timezone.utc
SEG = 16 << 20
MB = 1 << 20


def pglog(*lines: str) -> list[str]:
    return [
        f"2026-11-26 20:40:{i // 10:02d}.{i % 10}23 UTC [{123 if 'startup' not in ln else 124}] {ln}"
        for i, ln in enumerate(lines)
    ]


START = [
    "LOG:  starting PostgreSQL 16.4 on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit",
    'LOG:  listening on Unix socket "/tmp/pgrestore-0/r1/.s.PGSQL.54321"',
    "LOG:  database system was interrupted; last known up at 2026-11-26 20:43:55 UTC",
    'LOG:  restored log file "000000010000000000000009" from archive',
    "LOG:  redo starts at 0/9000028",
    "LOG:  consistent recovery state reached at 0/9000100",
    'LOG:  restored log file "00000001000000000000000A" from archive',
]

END_OF_WAL = {
    15: "LOG:  invalid record length at 0/A000148: wanted 24, got 0",
    16: "LOG:  invalid record length at 0/A000148: expected at least 24, got 0",
    18: "LOG:  invalid record length at 0/A000148: expected at least 24, got 0",
}

REDO_DONE = "LOG:  redo done at 0/A000110 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.05 s"

PROMOTE = [
    "LOG:  last completed transaction was at log time 2026-11-26 20:39:59.9+00",
    'LOG:  restored log file "00000002.history" from archive',
    "LOG:  selected new timeline ID: 2",
    "LOG:  archive recovery complete",
    "LOG:  checkpoint starting: end-of-recovery immediate wait",
    "LOG:  checkpoint complete: wrote 3 buffers (0.0%); 0 WAL file(s) added, 0 removed, 0 recycled; "
    "write=0.001 s, sync=0.001 s, total=0.003 s; sync files=2, longest=0.001 s, average=0.001 s; "
    "distance=0 kB, estimate=0 kB; lsn=0/A000180, redo lsn=0/A000180",
    "LOG:  database system is ready to accept connections",
]

ENDED_EARLY = [
    "FATAL:  recovery ended before configured recovery target was reached",
    "LOG:  startup process (PID 124) exited with exit code 1",
    "LOG:  terminating any other active server processes",
    "LOG:  shutting down due to startup process failure",
    "LOG:  database system is shut down",
]

TIME = RestoreTarget.parse("2026-11-26T20:40:00Z")
LATEST = RestoreTarget.parse("latest")


def verdict(
    obs: Observation,
    target: RestoreTarget = TIME,
    *,
    archive_end: int | None = 0xC000000,
    timeline: int = 1,
    size: int = SEG,
):
    return decide(obs, target, timeline=timeline, segment_size=size, archive_end_lsn=archive_end)


def promoted(lines: list[str], **kw) -> Observation:
    return Observation(log_lines=pglog(*lines), promoted=True, **kw)


def down(lines: list[str], exited: int = 1, **kw) -> Observation:
    return Observation(log_lines=pglog(*lines), promoted=False, exited=exited, **kw)


# -- REACHED ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["before commit", "before abort", "after commit"])
def test_time_target_reached(kind):
    stop = f"LOG:  recovery stopping {kind} of transaction 729, time 2026-11-26 20:40:00.5+00"
    obs = promoted(
        [*START, stop, REDO_DONE, *PROMOTE],
        last_replay_time=datetime(2026, 11, 26, 20, 39, 59, 900000, tzinfo=UTC),
    )
    v = verdict(obs)
    assert v.outcome is Outcome.REACHED
    assert v.stop_reason == f"recovery stopping {kind} of transaction 729, time 2026-11-26 20:40:00.5+00"
    assert "promoted" in v.detail


@pytest.mark.parametrize(
    ("target", "stop"),
    [
        ("immediate", "LOG:  recovery stopping after reaching consistency"),
        ("oldest", "LOG:  recovery stopping after reaching consistency"),
        ("backup:20261126T204355", "LOG:  recovery stopping after reaching consistency"),
        ("lsn:0/A000148", 'LOG:  recovery stopping after WAL location (LSN) "0/A000148"'),
        ("lsn:0/A000148", 'LOG:  recovery stopping before WAL location (LSN) "0/A000148"'),
        ("xid:729", "LOG:  recovery stopping after commit of transaction 729, time 2026-11-26 20:40:00.5+00"),
        (
            "xid:729",
            "LOG:  recovery stopping before commit of transaction 729, time 2026-11-26 20:40:00.5+00",
        ),
        (
            "name:before_migration",
            'LOG:  recovery stopping at restore point "before_migration", time 2026-11-26 20:40:00.5+00',
        ),
    ],
)
def test_other_targets_reached(target, stop):
    v = verdict(promoted([*START, stop, REDO_DONE, *PROMOTE]), RestoreTarget.parse(target))
    assert v.outcome is Outcome.REACHED
    assert v.stop_reason == stop.removeprefix("LOG:  ")


def test_latest_reached_inside_the_newest_segment():
    obs = promoted([*START, END_OF_WAL[16], REDO_DONE, *PROMOTE], replay_lsn=0xB000148)
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is Outcome.REACHED
    assert "0/B000148 on timeline 1" in v.detail
    assert "archive ends at 0/C000000" in v.detail
    assert v.stop_reason.endswith(END_OF_WAL[16])


def test_latest_reached_exactly_at_the_boundary_after_a_wal_switch():
    # the newest segment ends in an XLOG_SWITCH record: replay ends at the segment's end
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xC000000)
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is Outcome.REACHED
    assert v.stop_reason == "end of archive"


def test_latest_reached_once_replay_asked_past_the_newest_segment():
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xC000000,
                   asked_absent=["00000001000000000000000C", "00000002.history"])
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is Outcome.REACHED
    assert "00000001000000000000000C is not archived" in v.detail


@pytest.mark.parametrize(("lines", "outcome"), [
    ([*START, END_OF_WAL[16], REDO_DONE, *PROMOTE], Outcome.CORRUPT_WAL),  # a tidy message mid-segment
    ([*START, REDO_DONE, *PROMOTE], Outcome.TRUNCATED),  # no reason at all
])
def test_latest_stopping_inside_the_newest_segment_without_asking_past_it(lines, outcome):
    obs = promoted(lines, replay_lsn=0xB000148, asked_absent=["00000002.history"])
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is outcome
    assert "inside the newest archived segment 00000001000000000000000B, without reading past it" in v.detail


def test_latest_reached_without_wal_after_the_backup():
    v = verdict(promoted([*START, *PROMOTE], replay_lsn=0x9000100), LATEST, archive_end=None)
    assert v.outcome is Outcome.REACHED
    assert "no archived WAL beyond the backup" in v.detail


def test_latest_falls_back_to_the_redo_done_position():
    obs = promoted([*START, "LOG:  redo done at 0/B000028 system usage: CPU: user: 0.00 s", *PROMOTE])
    assert verdict(obs, LATEST).outcome is Outcome.REACHED


def test_latest_on_one_megabyte_segments():
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xBF00010)
    assert verdict(obs, LATEST, archive_end=0xC000000, size=MB).outcome is Outcome.REACHED
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xBE00010)
    assert verdict(obs, LATEST, archive_end=0xC000000, size=MB).outcome is Outcome.TRUNCATED


# -- TRUNCATED -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [15, 16, 18])
def test_latest_truncated_in_an_earlier_segment(version):
    obs = promoted([*START, END_OF_WAL[version], REDO_DONE, *PROMOTE], replay_lsn=0xA000148)
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is Outcome.TRUNCATED
    assert "replay ended at 0/A000148 but the archive holds WAL up to 0/C000000 on timeline 1" in v.detail
    assert "1 segment(s) were not replayed" in v.detail
    assert "invalid record length at 0/A000148" in v.stop_reason


def test_latest_truncated_at_the_start_of_the_newest_segment():
    # replay ended on the boundary *before* the newest segment: none of it was replayed
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xB000000)
    v = verdict(obs, LATEST, archive_end=0xC000000)
    assert v.outcome is Outcome.TRUNCATED
    assert "1 segment(s) were not replayed" in v.detail
    obs = promoted([*START, REDO_DONE, *PROMOTE], replay_lsn=0xA000000)
    assert "2 segment(s) were not replayed" in verdict(obs, LATEST, archive_end=0xC000000).detail


def test_latest_with_no_known_position_is_truncated():
    v = verdict(promoted([*START, *PROMOTE]), LATEST)
    assert v.outcome is Outcome.TRUNCATED
    assert "position is unknown" in v.detail


# -- ENDED_EARLY ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [15, 16, 18])
def test_recovery_ended_before_the_target(version):
    obs = down(
        [
            *START,
            END_OF_WAL[version],
            REDO_DONE,
            "LOG:  last completed transaction was at log time 2026-11-26 20:39:59.9+00",
            *ENDED_EARLY,
        ]
    )
    v = verdict(obs)
    assert v.outcome is Outcome.ENDED_EARLY
    assert v.stop_reason == "recovery ended before configured recovery target was reached"
    assert "No commit after 2026-11-26T20:40:00Z is in the archive" in v.detail
    assert "end of WAL (0/A000110)" in v.detail


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("xid:729", "transaction 729 was not found in the WAL replayed from this backup"),
        ("name:before_migration", "restore point 'before_migration' was not found"),
        ("lsn:0/B000000", "(target lsn:0/B000000); replay ended at 0/A000110"),
    ],
)
def test_recovery_ended_before_other_targets(target, says):
    v = verdict(down([*START, END_OF_WAL[16], REDO_DONE, *ENDED_EARLY]), RestoreTarget.parse(target))
    assert v.outcome is Outcome.ENDED_EARLY
    assert v.stop_reason == "recovery ended before configured recovery target was reached"
    assert says in v.detail


def test_stop_point_before_consistency():
    obs = down(
        [
            *START[:5],
            'LOG:  recovery stopping before WAL location (LSN) "0/9000060"',
            "FATAL:  requested recovery stop point is before consistent recovery point",
            "LOG:  startup process (PID 124) exited with exit code 1",
        ]
    )
    v = verdict(obs, RestoreTarget.parse("lsn:0/9000060"))
    assert v.outcome is Outcome.ENDED_EARLY
    assert v.stop_reason == "requested recovery stop point is before consistent recovery point"
    assert "an unknown LSN" in v.detail


def test_promoted_without_a_stopping_line():
    v = verdict(promoted([*START, END_OF_WAL[16], REDO_DONE, *PROMOTE]), RestoreTarget.parse("xid:729"))
    assert v.outcome is Outcome.ENDED_EARLY
    assert "without a 'recovery stopping' line" in v.detail


def test_time_target_whose_last_commit_is_after_the_target():
    stop = "LOG:  recovery stopping before commit of transaction 729, time 2026-11-26 20:40:00.5+00"
    obs = promoted(
        [*START, stop, REDO_DONE, *PROMOTE], last_replay_time=datetime(2026, 11, 26, 20, 40, 0, 1, tzinfo=UTC)
    )
    v = verdict(obs)
    assert v.outcome is Outcome.ENDED_EARLY
    assert "is after the target" in v.detail


# -- CORRUPT_WAL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "LOG:  incorrect resource manager data checksum in record at 0/A000060",
        "LOG:  invalid resource manager ID 250 at 0/A000060",
        "LOG:  invalid contrecord length 1264 (expected 40) at 0/A000060",
        "LOG:  invalid magic number 1234 in log segment 00000001000000000000000A, offset 0",  # 15
        "LOG:  invalid magic number 1234 in WAL segment 00000001000000000000000A, LSN 0/A000000, offset 0",  # 16+
        "LOG:  invalid info bits 0010 in log segment 00000001000000000000000A, offset 8192",
        "LOG:  invalid info bits 0010 in WAL segment 00000001000000000000000A, LSN 0/A002000, offset 8192",
    ],
)
@pytest.mark.parametrize("after", ["promoted", "ended early"])
def test_corrupt_wal(line, after):
    if after == "promoted":
        obs = promoted([*START, line, REDO_DONE, *PROMOTE], replay_lsn=0xA000060)
        target = LATEST
    else:
        obs = down([*START, line, REDO_DONE, *ENDED_EARLY])
        target = TIME
    v = verdict(obs, target)
    assert v.outcome is Outcome.CORRUPT_WAL
    assert line.removeprefix("LOG:  ") in v.detail


# -- PAUSED_PARAMS ------------------------------------------------------------------------------------

PARAMS = [
    "WARNING:  hot standby is not possible because of insufficient parameter settings",
    "DETAIL:  max_connections = 100 is a lower setting than on the primary server, where its value was 200.",
    "LOG:  recovery has paused",
    "DETAIL:  If recovery is unpaused, the server will shut down.",
    "HINT:  You can then restart the server after making the necessary configuration changes.",
]


def test_paused_names_the_parameter():
    obs = Observation(log_lines=pglog(*START, *PARAMS), promoted=False, paused=True)
    v = verdict(obs)
    assert v.outcome is Outcome.PAUSED_PARAMS
    assert "max_connections = 100 (primary: 200)" in v.detail
    assert v.stop_reason == "recovery has paused"


def test_paused_names_every_parameter():
    lines = [
        *START,
        *PARAMS[:2],
        "WARNING:  hot standby is not possible because of insufficient parameter settings",
        "DETAIL:  max_worker_processes = 8 is a lower setting than on the primary server, "
        "where its value was 16.",
        *PARAMS[2:],
    ]
    v = verdict(Observation(log_lines=pglog(*lines), promoted=False, paused=True))
    assert "max_connections = 100 (primary: 200), max_worker_processes = 8 (primary: 16)" in v.detail


def test_paused_without_the_detail_line_yet():
    v = verdict(Observation(log_lines=pglog(*START), promoted=False, paused=True))
    assert v.outcome is Outcome.PAUSED_PARAMS
    assert "a hot-standby parameter" in v.detail


def test_parameter_warning_even_when_the_probe_missed_the_pause():
    v = verdict(Observation(log_lines=pglog(*START, *PARAMS), promoted=False, timed_out=True))
    assert v.outcome is Outcome.PAUSED_PARAMS


# -- RESTORE_COMMAND_ABORT ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "why",
    [
        "child process was terminated by signal 9: Killed",
        "child process exited with exit code 204",
        "child process exited with exit code 127",
    ],
)
def test_restore_command_abort(why):
    obs = down(
        [
            *START[:5],
            f'FATAL:  could not restore file "000000010000000000000005" from archive: {why}',
            "LOG:  startup process (PID 124) exited with exit code 1",
            "LOG:  aborting startup due to startup process failure",
            "LOG:  database system is shut down",
        ]
    )
    v = verdict(obs)
    assert v.outcome is Outcome.RESTORE_COMMAND_ABORT
    assert f"for 000000010000000000000005 ({why})" in v.detail
    assert v.stop_reason == "could not restore 000000010000000000000005"


def test_spool_errors_alone_mean_abort():
    obs = Observation(
        log_lines=pglog(*START),
        promoted=False,
        exited=1,
        spool_errors={"000000010000000000000005": "wal/000000010000000000000005.zst: Access Denied"},
    )
    v = verdict(obs)
    assert v.outcome is Outcome.RESTORE_COMMAND_ABORT
    assert "000000010000000000000005: wal/000000010000000000000005.zst: Access Denied" in v.detail


# -- START_FAILED and TIMEOUT -----------------------------------------------------------------------


def test_start_failed_quotes_the_first_fatal():
    obs = down(
        [
            "LOG:  starting PostgreSQL 18.1 on x86_64-pc-linux-gnu",
            'FATAL:  could not access file "pg_partman_bgw": No such file or directory',
            "LOG:  startup process (PID 124) exited with exit code 1",
            "LOG:  aborting startup due to startup process failure",
        ],
        exited=1,
    )
    v = verdict(obs)
    assert v.outcome is Outcome.START_FAILED
    assert 'could not access file "pg_partman_bgw"' in v.detail
    assert "(exit code 1)" in v.detail
    assert 'FATAL:  could not access file "pg_partman_bgw"' in v.stop_reason
    # a missing checkpoint record is missing WAL, not a start failure: ENDED_EARLY (test_negative.py)


def test_start_failed_with_a_panic_or_no_log():
    obs = down(["PANIC:  could not locate a valid checkpoint record"], exited=-6)
    assert verdict(obs).outcome is Outcome.START_FAILED
    v = verdict(Observation(log_lines=[], promoted=False, exited=1))
    assert v.outcome is Outcome.START_FAILED
    assert "no FATAL line in the log" in v.detail


def test_timeout():
    obs = Observation(
        log_lines=pglog(*START, "LOG:  redo in progress, elapsed time: 10.01 s, current LSN: 0/A000060"),
        promoted=False,
        timed_out=True,
    )
    v = verdict(obs)
    assert v.outcome is Outcome.TIMEOUT
    assert "--restore-timeout" in v.detail


# -- precedence and the log scanner --------------------------------------------------------------------


def test_abort_wins_over_everything_else():
    obs = down(
        [
            *START,
            "LOG:  incorrect resource manager data checksum in record at 0/A000060",
            'FATAL:  could not restore file "00000001000000000000000B" from archive: '
            "child process exited with exit code 203",
            *ENDED_EARLY,
        ]
    )
    assert verdict(obs).outcome is Outcome.RESTORE_COMMAND_ABORT


def test_corruption_wins_over_ended_early_and_params():
    obs = down(
        [
            *START,
            "LOG:  incorrect resource manager data checksum in record at 0/A000060",
            *PARAMS[:2],
            *ENDED_EARLY,
        ],
        paused=True,
    )
    assert verdict(obs).outcome is Outcome.CORRUPT_WAL


@pytest.mark.parametrize(
    "line",
    [
        END_OF_WAL[15],
        END_OF_WAL[16],
        "LOG:  invalid magic number 0000 in log segment 00000001000000000000000B, offset 0",
        "LOG:  invalid magic number 0000 in WAL segment 00000001000000000000000B, LSN 0/B000000, offset 0",
        "LOG:  record with incorrect prev-link 0/1000028 at 0/A000148",
        "LOG:  unexpected pageaddr 0/2000000 in log segment 00000001000000000000000B, offset 0",
        "LOG:  unexpected pageaddr 0/2000000 in WAL segment 00000001000000000000000B, LSN 0/B000000, offset 0",
    ],
)
def test_clean_end_of_wal_is_not_corruption(line):
    facts = scan_log(pglog(line))
    assert facts.corrupt is None
    assert facts.clean_end is not None and line.removeprefix("LOG:  ") in facts.clean_end


def test_scan_log_facts():
    facts = scan_log(pglog(*START, "LOG:  recovery stopping after reaching consistency", REDO_DONE, *PROMOTE))
    assert facts.stopping == "recovery stopping after reaching consistency"
    assert facts.redo_done == 0xA000110
    assert facts.promoted
    assert facts.fatal is None
    assert not facts.ended_early and not facts.before_consistent
    assert facts.params == []


def test_read_only_connections_are_not_a_promotion():
    facts = scan_log(pglog(*START, "LOG:  database system is ready to accept read-only connections"))
    assert not facts.promoted
