"""Listing-only checks of a backup store (pure): backup retention/freshness and WAL continuity.

One implementation serves ``pgrestore verify``, the ``backup_catalog`` fixture and the
built-in checks: "the last N backups exist, the newest is younger than D, and WAL is
continuous from the oldest retained backup to the newest archived segment".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .._fmt import human_duration
from ..formats._catalog import Catalog
from ..formats._wal import segment_name
from ..restore._plan import Split, find_split
from ..settings._target import format_lsn

__all__ = ["WalRun", "BackupsCheck", "check_backups", "wal_continuity", "VerifyReport", "verify", "split_timeline"]


@dataclass(frozen=True)
class WalRun:
    """A run of consecutive segments on one timeline that are all FOUND or all MISSING."""

    timeline: int
    first: str
    last: str
    count: int
    status: str  # "FOUND" | "MISSING"


@dataclass
class BackupsCheck:
    ok: bool
    count: int
    newest: str | None
    newest_age_seconds: float | None
    problems: list[str] = field(default_factory=list)


def check_backups(catalog: Catalog, *, min_backups: int = 1, max_age: float | None = None,
                  now: datetime | None = None) -> BackupsCheck:
    """At least ``min_backups`` backups exist and the newest finished less than ``max_age`` s ago."""
    now = now or datetime.now(timezone.utc)
    backups = catalog.backups
    problems = []
    if len(backups) < min_backups:
        problems.append(f"{len(backups)} backup(s) in {catalog.source}, at least {min_backups} required")
    newest = max(backups, key=lambda b: (b.stop_time or datetime.min.replace(tzinfo=timezone.utc), b.stop_lsn),
                 default=None)
    age = (now - newest.stop_time).total_seconds() if newest and newest.stop_time else None
    if max_age is not None and newest is not None:
        if age is None:
            problems.append(f"the newest backup {newest.name} has no known stop time")
        elif age > max_age:
            problems.append(f"the newest backup {newest.name} finished {human_duration(age)} ago, "
                            f"older than the allowed {human_duration(max_age)}")
    return BackupsCheck(ok=not problems, count=len(backups), newest=newest.name if newest else None,
                        newest_age_seconds=age, problems=problems)


def wal_continuity(catalog: Catalog) -> list[WalRun]:
    """FOUND/MISSING runs from the oldest backup's start to the newest segment, history-aware.

    The path followed is the newest timeline that descends from the oldest backup, so a
    segment of an abandoned branch never hides a gap on the branch replay would take.
    """
    wal, backups = catalog.wal, catalog.backups
    if not backups or not wal.segment_size:
        return []
    oldest = backups[0]
    reachable = [t for t in wal.timelines() if wal.descends_from(t, oldest)] or [oldest.timeline]
    needed = wal.needed_segments(max(reachable), oldest.start_lsn, None)
    runs: list[WalRun] = []
    size = wal.segment_size
    for tli, segno in needed:
        status = "FOUND" if segno in wal.segments.get(tli, {}) else "MISSING"
        name = segment_name(tli, segno, size)
        last = runs[-1] if runs else None
        if last and last.timeline == tli and last.status == status:
            runs[-1] = WalRun(tli, last.first, name, last.count + 1, status)
        else:
            runs.append(WalRun(tli, name, name, 1, status))
    return runs


def split_timeline(catalog: Catalog) -> Split | None:
    """The split history a ``latest`` restore of the oldest backup would meet (the path
    :func:`wal_continuity` follows): another line has archived WAL past the newest timeline's end."""
    wal, backups = catalog.wal, catalog.backups
    if not backups or not wal.segment_size:
        return None
    oldest = backups[0]
    reachable = [t for t in wal.timelines() if wal.descends_from(t, oldest)] or [oldest.timeline]
    return find_split(wal, oldest, max(reachable))


def _split_problem(split: Split) -> str:
    followed, living = split.followed, split.living
    return (f"split history: timeline {followed.timeline} is the newest, but {living.describe()}, past "
            f"{followed.describe()} (they parted at {format_lsn(split.fork_lsn)}); `latest` would miss what "
            f"timeline {living.timeline} wrote; pick one with --restore-timeline {living.timeline} or "
            f"--restore-timeline {followed.timeline} and remove the stray line from the archive")


@dataclass
class VerifyReport:
    ok: bool
    source: str
    format: str
    backups: BackupsCheck
    wal: list[WalRun]
    reachable_until: str | None  # end LSN of WAL that replay can reach without a gap
    problems: list[str] = field(default_factory=list)  # of the WAL (a split history)
    split: Split | None = None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "source": self.source, "format": self.format, "backups": asdict(self.backups),
                "wal": [asdict(r) for r in self.wal], "reachable_until": self.reachable_until,
                "problems": self.problems, "split_timeline": self.split.to_dict() if self.split else None}


def verify(catalog: Catalog, *, min_backups: int = 1, max_age: float | None = None,
           now: datetime | None = None) -> VerifyReport:
    backups = check_backups(catalog, min_backups=min_backups, max_age=max_age, now=now)
    runs = wal_continuity(catalog)
    reachable = None
    if runs and runs[0].status == "FOUND" and catalog.wal.segment_size:
        from ..formats._wal import parse_segment_name

        last = parse_segment_name(runs[0].last, catalog.wal.segment_size)
        # the first FOUND run may be followed by FOUND runs on child timelines: extend through them
        for run in runs:
            if run.status == "MISSING":
                break
            last = parse_segment_name(run.last, catalog.wal.segment_size)
        reachable = format_lsn((last.segno + 1) * catalog.wal.segment_size)
    split = split_timeline(catalog)
    problems = [_split_problem(split)] if split else []
    ok = backups.ok and bool(runs) and all(r.status == "FOUND" for r in runs) and not problems
    return VerifyReport(ok=ok, source=catalog.source, format=catalog.format, backups=backups, wal=runs,
                        reachable_until=reachable, problems=problems, split=split)
