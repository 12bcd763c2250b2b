"""Choose the backup and WAL for a target, and refuse what the listing proves unreachable (pure).

Every check here runs on the catalog alone, before a byte of the base backup is downloaded.
What a listing cannot know (commit times inside WAL, where an xid or a restore point lies) is
left to the verdict after replay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import PgRestoreError, PreflightError
from ..formats._catalog import Backup, Catalog, WalArchive
from ..formats._wal import segment_name
from ..settings._target import RestoreTarget, format_lsn
from ._result import Outcome

__all__ = ["Plan", "make_plan", "MIN_MAJOR", "ARCHIVE_END_MARGIN", "LineEnd", "Split", "SplitTimeline",
           "find_split"]

MIN_MAJOR = 13  # "recovery ended before configured recovery target was reached" exists from 13 on
ARCHIVE_END_MARGIN = timedelta(minutes=5)


@dataclass
class Plan:
    target: RestoreTarget
    backup: Backup
    timeline: int  # the timeline replay must follow
    segments: list[str]  # WAL file names replay will ask for, in order
    segment_keys: dict[str, str]  # file name → object key
    archive_end_lsn: int | None  # end of the newest archived segment on ``timeline``
    recovery: dict[str, str]  # recovery_target* settings
    fallbacks: list[Backup] = field(default_factory=list)  # older backups to try (xid:/name:)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LineEnd:
    """Where the archived WAL of one line of history ends (whole segments: what a listing knows)."""

    timeline: int
    end_lsn: int  # end of the newest archived segment on this line
    segment: str  # that segment's file name (it may lie on an ancestor, right after a failover)
    archived_at: datetime | None  # its LastModified

    def describe(self) -> str:
        when = f", archived at {_fmt_time(self.archived_at)}" if self.archived_at else ""
        return f"timeline {self.timeline} ends at {format_lsn(self.end_lsn)} (newest segment {self.segment}{when})"


@dataclass(frozen=True)
class Split:
    """The timeline ``latest`` would follow ends before another line that descends from the backup."""

    followed: LineEnd  # the newest timeline: what ``latest`` (recovery_target_timeline) picks
    living: LineEnd  # the line whose archived WAL goes furthest
    fork_lsn: int  # where the two lines part

    def to_dict(self) -> dict[str, object]:
        def line(end: LineEnd) -> dict[str, object]:
            return {"timeline": end.timeline, "end_lsn": format_lsn(end.end_lsn), "segment": end.segment,
                    "archived_at": end.archived_at.isoformat() if end.archived_at else None}

        return {"followed": line(self.followed), "living": line(self.living), "fork_lsn": format_lsn(self.fork_lsn)}


class SplitTimeline(PreflightError):
    """Two lines of history continue after a fork and the newest timeline is not the one that went
    on furthest (a copy promoted with production's archive_command): ``latest`` is ambiguous."""

    outcome = Outcome.SPLIT_TIMELINE

    def __init__(self, what: str, *, checked: str | None = None, fix: str | None = None,
                 split: Split | None = None) -> None:
        super().__init__(what, checked=checked, fix=fix)
        self.split = split


def make_plan(catalog: Catalog, target: RestoreTarget, *, timeline: str = "latest",
              inclusive: bool = True, backup: Backup | None = None) -> Plan:
    """Plan a restore of ``target``; ``backup`` forces the backup (retries of xid:/name:)."""
    if target.tentative and catalog.backup(target.backup_name) is None:
        _refuse_tentative(target, catalog)  # before "no backup found": a malformed target stays exit 4
    if not catalog.backups:
        raise PreflightError(f"no backup found in {catalog.source}",
                             checked=f"the {catalog.format} layout's backup folders",
                             fix="run a base backup first, or point --restore-source at the right prefix")
    candidates = _candidates(catalog, target)
    chosen = backup or candidates[0]
    _check_backup(chosen)
    wal = catalog.wal
    tli = _target_timeline(wal, chosen, timeline)
    end = _end_lsn(target, chosen)
    if timeline == "latest":
        _check_split(wal, chosen, tli, target)
    _check_range(wal, chosen, tli, target)
    needed = wal.needed_segments(tli, chosen.start_lsn, end)
    _check_gaps(wal, chosen, tli, needed, target)
    size = _segment_size(wal)
    names = [segment_name(t, s, size) for t, s in needed]
    keys = {segment_name(t, s, size): wal.segments[t][s].key for t, s in needed}
    newest = wal.newest_segno(tli)
    plan = Plan(target=target, backup=chosen, timeline=tli, segments=names, segment_keys=keys,
                archive_end_lsn=(newest + 1) * size if newest is not None else None,
                recovery=_recovery_settings(target, _timeline_setting(wal, chosen, tli), inclusive),
                fallbacks=[b for b in candidates if b is not chosen and b.stop_lsn < chosen.stop_lsn])
    return plan


def _candidates(catalog: Catalog, target: RestoreTarget) -> list[Backup]:
    """Backups that can serve ``target``, best first."""
    backups = catalog.backups  # oldest first
    names = ", ".join(b.name for b in backups)
    if target.backup:
        found = catalog.backup(target.backup)
        if found is None:
            raise PreflightError(f"backup {target.backup!r} is not in {catalog.source}",
                                 checked=f"{len(backups)} backups: {names}",
                                 fix="pick one of the listed backups (pgrestore list SOURCE)")
        _check_pin(found, target)
        return [found]
    if target.kind == "oldest":
        return [backups[0]]
    if target.kind in ("latest", "immediate", "xid", "name"):
        return list(reversed(backups))
    if target.kind == "time":
        fit = [b for b in backups if b.stop_time is not None and b.stop_time <= target.stop_time]
        if not fit:
            ended = [(b.stop_time, b) for b in backups if b.stop_time]
            oldest = min(ended, key=lambda pair: pair[0])[1] if ended else backups[0]
            raise PreflightError(
                f"target {target} is before the oldest backup finished ({oldest.name} ended at "
                f"{_fmt_time(oldest.stop_time)})",
                checked=f"stop times of {len(backups)} backups: {names}",
                fix=f"choose a target at or after {_fmt_time(oldest.stop_time)}; older data is not retained")
        return list(reversed(fit))
    if target.kind == "lsn":
        fit = [b for b in backups if b.stop_lsn <= target.stop_lsn]
        if not fit:
            raise PreflightError(
                f"target {target} is before the oldest backup's end ({backups[0].name} is consistent "
                f"at {format_lsn(backups[0].stop_lsn)})",
                checked=f"stop LSNs of {len(backups)} backups: {names}",
                fix=f"choose an LSN at or after {format_lsn(backups[0].stop_lsn)}")
        return list(reversed(fit))
    raise AssertionError(target.kind)


def _refuse_tentative(target: RestoreTarget, catalog: Catalog) -> None:
    """A bare name the grammar does not know, and no backup has: the parser's own refusal (a usage
    error, with its corrected spelling), which also says the listing was looked at."""
    refusal = target.refusal()
    if refusal is None:  # the text parses strictly after all: only the name lookup can answer
        return
    backups = catalog.backups
    listed = f"{len(backups)} backups: {', '.join(b.name for b in backups)}" if backups else "it holds none"
    refusal.checked = f"{refusal.checked}; nor is it the name of a backup in {catalog.source} ({listed})"
    raise refusal


def _check_pin(backup: Backup, target: RestoreTarget) -> None:
    """A pinned backup must be consistent before a time or LSN target, as a chosen one is."""
    if target.kind == "time" and backup.stop_time is not None and backup.stop_time > target.stop_time:
        ends = _fmt_time(backup.stop_time)
    elif target.kind == "lsn" and backup.stop_lsn > target.stop_lsn:
        ends = format_lsn(backup.stop_lsn)
    else:
        return
    raise PreflightError(
        f"target {target} is before backup {backup.name} became consistent (at {ends})",
        checked="the pinned backup's end against the target",
        fix="pin an older backup, or drop the @backup: pin and let the plan choose")


def _check_backup(backup: Backup) -> None:
    refusal = backup.details.get("refusal")  # what the format's catalog already knows it cannot do
    if isinstance(refusal, PreflightError):
        raise refusal
    if isinstance(refusal, PgRestoreError):
        raise PreflightError(refusal.what, checked=refusal.checked, fix=refusal.fix) from refusal
    if backup.pg_major is not None and backup.pg_major < MIN_MAJOR:
        raise PreflightError(
            f"backup {backup.name} is from PostgreSQL {backup.pg_major}, older than {MIN_MAJOR}",
            checked="the WAL page magic of the backup's first segment",
            fix=f"PostgreSQL before {MIN_MAJOR} promotes silently when a target is missed, so a drill "
                "cannot prove anything; upgrade, or verify this backup by hand")
    if backup.incremental:
        raise PreflightError(
            f"backup {backup.name} is a PostgreSQL 17+ incremental backup that was not combined",
            checked="INCREMENTAL FROM LSN in the backup's history file",
            fix="combine it with pg_combinebackup into a full backup, or restore a full backup")


def _target_timeline(wal: WalArchive, backup: Backup, requested: str) -> int:
    if requested == "current":
        return backup.timeline
    if requested != "latest":
        tli = int(requested)
        if not wal.descends_from(tli, backup):
            raise PreflightError(
                f"timeline {tli} is not reachable from backup {backup.name} (timeline {backup.timeline})",
                checked=f"history files in the archive: {_histories(wal)}",
                fix="pick a timeline that forked after the backup ended, or --restore-timeline=latest")
        return tli
    reachable = [t for t in wal.timelines() if wal.descends_from(t, backup)] or [backup.timeline]
    best = max(reachable)
    orphans = [t for t in wal.segments if t > best and t not in wal.histories]
    if orphans:
        t = min(orphans)
        raise PreflightError(
            f"timeline {t} has archived WAL but no {t:08X}.history file, so it cannot be followed",
            checked=f"history files in the archive: {_histories(wal)}; timelines with segments: "
                    f"{sorted(wal.segments)}",
            fix=f"restore {t:08X}.history into the archive, or pin --restore-timeline={best} to "
                "accept the older branch")
    return best


def find_split(wal: WalArchive, backup: Backup, tli: int) -> Split | None:
    """The split a listing proves: another timeline that descends from ``backup`` has archived WAL
    past the end of ``tli``'s line (see docs/outcomes.md, SPLIT_TIMELINE).

    Ends are compared in whole segments, the only unit a listing knows: a line ends at the end of
    its newest archived segment.  ``tli`` reaching as far as every other line (the old primary's
    last records lie in a segment no newer than the new primary's newest) is a clean failover.
    """
    size = wal.segment_size
    followed_segno = wal.newest_segno(tli)
    if not size or followed_segno is None:
        return None
    best: tuple[int, int] | None = None  # (segno, timeline) of the line that goes furthest
    for t in wal.timelines():
        own = wal.segments.get(t)
        if t == tli or not own or not wal.descends_from(t, backup):
            continue
        newest = max(own)
        if newest > followed_segno and (best is None or newest > best[0]):
            best = (newest, t)
    if best is None:
        return None
    segno, other = best
    return Split(followed=_line_end(wal, tli, followed_segno), living=_line_end(wal, other, segno),
                 fork_lsn=_fork_lsn(wal, tli, other))


def _line_end(wal: WalArchive, tli: int, segno: int) -> LineEnd:
    size = _segment_size(wal)
    on = next((t for t in sorted(wal.segments, reverse=True)
               if segno in wal.segments[t] and (t == tli or _is_ancestor(wal, t, tli))), tli)
    seg = wal.segments.get(on, {}).get(segno)
    return LineEnd(timeline=tli, end_lsn=(segno + 1) * size, segment=segment_name(on, segno, size),
                   archived_at=seg.last_modified if seg else None)


def _is_ancestor(wal: WalArchive, parent: int, tli: int) -> bool:
    try:
        return any(t == parent for t, _b, _e in wal.ancestry(tli)[:-1])
    except KeyError:
        return False


def _fork_lsn(wal: WalArchive, a: int, b: int) -> int:
    """Where the lines of ``a`` and ``b`` part: the earliest switch off their last shared timeline."""
    def chain(t: int) -> list[tuple[int, int, int | None]]:
        try:
            return wal.ancestry(t)
        except KeyError:  # the backup's own timeline without its history file: its line starts here
            return [(t, 0, None)]

    chain_a, chain_b = chain(a), chain(b)
    ends_a = {t: end for t, _begin, end in chain_a}
    ends_b = {t: end for t, _begin, end in chain_b}
    shared = [t for t, _b, _e in chain_a if t in ends_b]
    if not shared:
        return 0
    last = shared[-1]
    ends = [e for e in (ends_a[last], ends_b[last]) if e is not None]
    return min(ends) if ends else 0


def _check_split(wal: WalArchive, backup: Backup, tli: int, target: RestoreTarget) -> None:
    if target.stops_at_consistency:
        return  # stops at the backup's end, before any fork it can follow
    split = find_split(wal, backup, tli)
    if split is None:
        return
    if target.kind == "lsn" and target.stop_lsn <= split.fork_lsn:
        return  # both lines hold the same WAL up to the fork
    raise split_error(split, wal, backup)


def split_error(split: Split, wal: WalArchive, backup: Backup, *, when: str = "") -> SplitTimeline:
    """The refusal of a split history; ``when`` says it was seen after replay (the archive changed)."""
    followed, living = split.followed, split.living
    return SplitTimeline(
        f"{when}the archive holds a split history: timeline {followed.timeline}, the newest, which "
        f"recovery_target_timeline=latest would follow, is not the line that went on furthest: "
        f"{followed.describe()}; {living.describe()}, past it. The two parted at "
        f"{format_lsn(split.fork_lsn)}; restoring timeline {followed.timeline} would miss what was written on "
        f"timeline {living.timeline} after that",
        checked=f"history files in the archive: {_histories(wal)}; the newest archived segment of every "
                f"timeline that descends from backup {backup.name} (timeline {backup.timeline}); "
                "a clean failover's new timeline reaches at least as far as the old one",
        fix=f"find out which line is production (typically a copy restored with production's archive_command "
            f"left on pushed the other one) and pin it: --restore-timeline {living.timeline} (option "
            f"`timeline`, env PGRESTORE_TIMELINE) for the line that went on, or --restore-timeline "
            f"{followed.timeline} for the newest; then remove the stray line's history file and segments "
            "from the archive, or stop whatever archives them",
        split=split)


def _end_lsn(target: RestoreTarget, backup: Backup) -> int | None:
    if target.stops_at_consistency:
        return backup.stop_lsn
    if target.kind == "lsn":
        return target.stop_lsn
    return None  # replay to the end of the archive


def _check_range(wal: WalArchive, backup: Backup, tli: int, target: RestoreTarget) -> None:
    newest = wal.newest_segno(tli)
    end = (newest + 1) * _segment_size(wal) if newest is not None else None
    # the target needs a record that starts at or after it, so the archive end itself is past
    if target.kind == "lsn" and (end is None or target.stop_lsn >= end):
        raise PreflightError(
            f"target {target} is past the newest archived WAL on timeline {tli} "
            f"(archive ends at {format_lsn(end) if end else 'nothing archived'})",
            checked=f"segments of timeline {tli} in the archive",
            fix="choose an LSN inside the archive, or check that archive_command is running")
    if target.kind == "time" and newest is not None:
        last = wal.segments[tli][newest].last_modified
        if target.stop_time > last + ARCHIVE_END_MARGIN:
            raise PreflightError(
                f"target {target} is past the end of the archive: the newest segment on timeline {tli} "
                f"was archived at {_fmt_time(last)}",
                checked=f"LastModified of the newest segment plus a {ARCHIVE_END_MARGIN} margin",
                fix="choose an earlier time, use `latest`, or check that archive_command is running")


def _check_gaps(wal: WalArchive, backup: Backup, tli: int, needed: list[tuple[int, int]],
                target: RestoreTarget) -> None:
    missing = wal.missing(needed)
    if not missing:
        return
    size = _segment_size(wal)
    first = missing[0]
    names = [segment_name(t, s, size) for t, s in missing]
    shown = ", ".join(names[:5]) + (f" … ({len(names)} in all)" if len(names) > 5 else "")
    have_until = first[1] - 1
    raise PreflightError(
        f"WAL needed for target {target} is missing from the archive: {shown}",
        checked=f"segments {segment_name(*needed[0], size)} … {segment_name(*needed[-1], size)} from backup "
                f"{backup.name} along timeline {tli}; reachable without a gap up to "
                f"{format_lsn((have_until + 1) * size)}",
        fix="restore the missing segments into the archive, choose a target inside the reachable range, "
            "or increase WAL retention")


def _timeline_setting(wal: WalArchive, backup: Backup, tli: int) -> str:
    """A timeline number PostgreSQL can check, or ``current`` when its history file is not kept."""
    if tli == backup.timeline and tli > 1 and tli not in wal.histories:
        return "current"
    return str(tli)


def _recovery_settings(target: RestoreTarget, tli: str, inclusive: bool) -> dict[str, str]:
    settings = {"recovery_target_timeline": tli, "recovery_target_action": "promote"}
    incl = "on" if inclusive else "off"
    if target.stops_at_consistency:
        settings["recovery_target"] = "immediate"
    elif target.kind == "time":
        settings.update(recovery_target_time=target.stop_time.isoformat(), recovery_target_inclusive=incl)
    elif target.kind == "lsn":
        settings.update(recovery_target_lsn=format_lsn(target.stop_lsn), recovery_target_inclusive=incl)
    elif target.kind == "xid":
        settings.update(recovery_target_xid=str(target.stop_xid), recovery_target_inclusive=incl)
    elif target.kind == "name":
        settings["recovery_target_name"] = target.stop_name
    return settings


def _segment_size(wal: WalArchive) -> int:
    """Every format sets the size once it lists a segment; needed_segments() asserts it too."""
    size = wal.segment_size
    assert size, "segment size unknown"
    return size


def _histories(wal: WalArchive) -> str:
    return ", ".join(f"{t:08X}.history" for t in sorted(wal.histories)) or "none"


def _fmt_time(t: datetime | None) -> str:
    return t.isoformat() if t else "unknown"
