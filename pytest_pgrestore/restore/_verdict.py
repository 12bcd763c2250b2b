"""Server log + SQL state + the archive → an :class:`Outcome` and the reason (pure).

"The server accepts connections" is never success.  A target is REACHED only when the log
shows recovery stopping at it and the server promoted; ``latest`` is REACHED only when replay
ended on the planned timeline inside its newest archived segment (listing taken after replay)
with a clean end of WAL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from ..formats._wal import segment_name
from ..settings._target import RestoreTarget, format_lsn, parse_lsn
from ._result import Outcome

__all__ = ["Observation", "Verdict", "decide", "scan_log"]

_LSN = r"([0-9A-F]+/[0-9A-F]+)"
_STOPPING = re.compile(r"recovery stopping (before|after|at) (.*)$")
_ENDED_EARLY = "recovery ended before configured recovery target was reached"
_BEFORE_CONSISTENT = "requested recovery stop point is before consistent recovery point"
#: the WAL where the backup begins (its checkpoint or redo point) never arrived: replay ended at once
_NO_START = re.compile(r"could not (?:locate required checkpoint record|find redo location referenced by "
                       r"checkpoint record)")
_REDO_DONE = re.compile(r"redo done at " + _LSN)
_PROMOTED = ("archive recovery complete", "database system is ready to accept connections")
_RESTORE_FAILED = re.compile(r'FATAL:\s+could not restore file "([^"]+)" from archive: (.*)$')
_PARAM = re.compile(r"(\w+) = (\d+) is a lower setting than on the primary server, where its value was (\d+)")
_CORRUPT = [
    re.compile(r"incorrect resource manager data checksum in record at " + _LSN),
    re.compile(r"invalid magic number (?!0000)[0-9A-F]{4} in (?:log|WAL) segment \S+, (?:LSN|offset) (\S+)"),
    re.compile(r"invalid contrecord length \d+ .*at " + _LSN),
    re.compile(r"invalid resource manager ID \d+ at " + _LSN),
    re.compile(r"record length \d+ at " + _LSN + " too long"),
    re.compile(r"invalid info bits [0-9A-F]+ in (?:log|WAL) segment \S+"),
]
_CLEAN_END = re.compile(r"(invalid record length at " + _LSN + r"|invalid magic number 0000|"
                        r"record with incorrect prev-link|unexpected pageaddr)")


@dataclass
class Observation:
    """What recovery left behind, gathered by recover.py."""

    log_lines: list[str]
    promoted: bool  # pg_is_in_recovery() is false
    exited: int | None = None  # server exit code when it is down
    timed_out: bool = False
    paused: bool = False  # pg_get_wal_replay_pause_state() = 'paused'
    replay_lsn: int | None = None  # pg_last_wal_replay_lsn() after promotion
    last_replay_time: datetime | None = None
    spool_errors: dict[str, str] = field(default_factory=dict)
    #: names the harness answered "absent" (None when unknown): a clean end of an archive means
    #: replay read past the newest segment and asked for the next one
    asked_absent: list[str] | None = None


@dataclass
class Verdict:
    outcome: Outcome
    detail: str
    stop_reason: str | None = None


@dataclass
class LogFacts:
    stopping: str | None = None
    ended_early: bool = False
    before_consistent: bool = False
    no_start: str | None = None
    redo_done: int | None = None
    promoted: bool = False
    restore_failed: tuple[str, str] | None = None
    params: list[tuple[str, int, int]] = field(default_factory=list)
    corrupt: str | None = None
    clean_end: str | None = None
    fatal: str | None = None


def scan_log(lines: list[str]) -> LogFacts:
    facts = LogFacts()
    for line in lines:
        if m := _STOPPING.search(line):
            facts.stopping = m.group(0)
        if _ENDED_EARLY in line:
            facts.ended_early = True
        if _BEFORE_CONSISTENT in line:
            facts.before_consistent = True
        if _NO_START.search(line) and facts.no_start is None:
            facts.no_start = line.strip()
        if m := _REDO_DONE.search(line):
            facts.redo_done = parse_lsn(m.group(1))
        if any(p in line for p in _PROMOTED):
            facts.promoted = True
        if m := _RESTORE_FAILED.search(line):
            facts.restore_failed = (m.group(1), m.group(2))
        if m := _PARAM.search(line):
            facts.params.append((m.group(1), int(m.group(2)), int(m.group(3))))
        if any(p.search(line) for p in _CORRUPT):
            facts.corrupt = line.strip()
        elif _CLEAN_END.search(line):
            facts.clean_end = line.strip()
        if ("FATAL:" in line or "PANIC:" in line) and facts.fatal is None:
            facts.fatal = line.strip()
    return facts


def decide(obs: Observation, target: RestoreTarget, *, timeline: int, segment_size: int,
           archive_end_lsn: int | None) -> Verdict:
    """Decide the outcome of one recovery attempt.

    ``archive_end_lsn`` is the end of the newest archived segment on ``timeline`` from a
    listing taken after replay.
    """
    f = scan_log(obs.log_lines)
    # a fetch error only counts when replay needed that file: PostgreSQL aborted or never promoted
    if f.restore_failed or (obs.spool_errors and not obs.promoted):
        name, why = f.restore_failed or ("?", "")
        extra = "; ".join(f"{k}: {v}" for k, v in obs.spool_errors.items())
        return Verdict(Outcome.RESTORE_COMMAND_ABORT,
                       f"PostgreSQL aborted recovery: restore_command failed hard for {name} ({why}). "
                       f"{extra}".strip(), f.restore_failed and f"could not restore {name}")
    if f.corrupt:
        return Verdict(Outcome.CORRUPT_WAL, f"replay met a damaged WAL record: {f.corrupt}", f.corrupt)
    if f.ended_early and target.kind == "time":
        return Verdict(Outcome.ENDED_EARLY, f"PostgreSQL: {_ENDED_EARLY}. No commit after {target} is in the "
                       f"archive, so replay cannot tell it got there; the data at {target} is the data at the "
                       f"end of WAL ({format_lsn(f.redo_done) if f.redo_done is not None else 'unknown LSN'}) — "
                       "use `latest` or `lsn:`", _ENDED_EARLY)
    if f.ended_early and target.kind in ("xid", "name"):
        what = f"transaction {target.xid}" if target.kind == "xid" else f"restore point {target.name!r}"
        return Verdict(Outcome.ENDED_EARLY, f"PostgreSQL: {_ENDED_EARLY}: {what} was not found in the WAL "
                       "replayed from this backup", _ENDED_EARLY)
    if f.no_start and not obs.promoted:
        return Verdict(Outcome.ENDED_EARLY, f"recovery ended before it began: the WAL where the backup starts "
                       f"(its checkpoint) was not delivered, so the target {target} was never reached "
                       f"({f.no_start})", f.no_start)
    if f.ended_early or f.before_consistent:
        why = _BEFORE_CONSISTENT if f.before_consistent else _ENDED_EARLY
        return Verdict(Outcome.ENDED_EARLY, f"PostgreSQL: {why} (target {target}); replay ended at "
                       f"{format_lsn(f.redo_done) if f.redo_done is not None else 'an unknown LSN'}", why)
    if obs.paused or f.params:
        named = ", ".join(f"{n} = {v} (primary: {p})" for n, v, p in f.params) or "a hot-standby parameter"
        return Verdict(Outcome.PAUSED_PARAMS, f"recovery paused because {named} is lower than on the primary",
                       "recovery has paused")
    if obs.timed_out:
        return Verdict(Outcome.TIMEOUT, "recovery did not finish within --restore-timeout")
    if not obs.promoted:
        return Verdict(Outcome.START_FAILED, f"the server stopped before recovery finished: "
                       f"{f.fatal or 'no FATAL line in the log'} (exit code {obs.exited})", f.fatal)
    if target.kind == "latest":
        return _decide_latest(obs, f, timeline, segment_size, archive_end_lsn)
    if not f.stopping:
        return Verdict(Outcome.ENDED_EARLY, f"the server promoted without a 'recovery stopping' line for "
                       f"target {target}: the target was not met", None)
    if target.kind == "time" and obs.last_replay_time and obs.last_replay_time > target.stop_time:
        return Verdict(Outcome.ENDED_EARLY, f"the last replayed commit ({obs.last_replay_time.isoformat()}) "
                       f"is after the target {target}", f.stopping)
    return Verdict(Outcome.REACHED, f"{f.stopping}; promoted", f.stopping)


def _decide_latest(obs, f: LogFacts, timeline, segment_size, archive_end_lsn) -> Verdict:
    end = obs.replay_lsn if obs.replay_lsn is not None else f.redo_done
    if end is None:
        return Verdict(Outcome.TRUNCATED, "replay ended but its position is unknown", None)
    if archive_end_lsn is None:
        return Verdict(Outcome.REACHED, f"replayed to {format_lsn(end)}; no archived WAL beyond the backup",
                       f.clean_end or "end of archive")
    newest_start = archive_end_lsn - segment_size
    # an end exactly at a segment boundary (after a WAL switch) belongs to the segment before it
    if max(end - 1, 0) < newest_start:
        return Verdict(Outcome.TRUNCATED,
                       f"replay ended at {format_lsn(end)} but the archive holds WAL up to "
                       f"{format_lsn(archive_end_lsn)} on timeline {timeline}: "
                       f"{(newest_start - end) // segment_size + 1} segment(s) were not replayed",
                       f.clean_end or "end of the available WAL")
    following = segment_name(timeline, archive_end_lsn // segment_size, segment_size)
    if obs.asked_absent is not None and following not in obs.asked_absent:
        # Archived segments are complete (full, or closed by a WAL switch), so a clean end of the
        # archive is replay asking for the segment after the newest one.  Stopping inside the
        # newest segment without asking means a record there could not be read.
        why = f.clean_end or f.corrupt or "no reason in the log"
        outcome = Outcome.CORRUPT_WAL if (f.clean_end or f.corrupt) else Outcome.TRUNCATED
        return Verdict(outcome, f"replay stopped at {format_lsn(end)}, inside the newest archived segment "
                       f"{segment_name(timeline, newest_start // segment_size, segment_size)}, without reading "
                       f"past it ({why}): the rest of that segment was not replayed", why)
    return Verdict(Outcome.REACHED, f"replayed to {format_lsn(end)} on timeline {timeline}, through the "
                   f"newest archived segment (archive ends at {format_lsn(archive_end_lsn)}; "
                   f"{following} is not archived)", f.clean_end or "end of archive")
