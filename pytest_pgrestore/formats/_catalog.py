"""Backups and archived WAL of one source, as plain data, plus timeline reasoning (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._wal import TimelineEntry, segno_of

if TYPE_CHECKING:
    from ..store import ObjectInfo

__all__ = ["Backup", "Unfinished", "WalSegment", "WalArchive", "Catalog", "XLOG_PAGE_MAGIC"]

#: WAL page magic → PostgreSQL major version (``XLOG_PAGE_MAGIC`` in xlog_internal.h).
XLOG_PAGE_MAGIC = {
    0xD093: 9, 0xD097: 10, 0xD098: 11, 0xD101: 12, 0xD106: 13, 0xD10D: 14,
    0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18,
}


@dataclass
class Backup:
    name: str
    format: str
    start_lsn: int
    stop_lsn: int  # the backup is consistent once replay passes this
    timeline: int
    start_time: datetime | None = None
    stop_time: datetime | None = None
    pg_major: int | None = None
    segment_size: int | None = None
    system_identifier: int | None = None
    stored_bytes: int = 0
    size: int | None = None  # uncompressed, when the format says
    incremental: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # format-private (object keys, …)


@dataclass(frozen=True)
class Unfinished:
    """A backup whose data objects exist but whose completion marker (WAL-G's sentinel, barman's
    DONE backup.info, pg_basebackup's backup_manifest) does not yet: listed, never chosen."""

    name: str
    state: str  # "in progress" (still being written, or abandoned), "failed" (its tool said so), "unreadable"
    reason: str  # what is missing, in one phrase


@dataclass(frozen=True)
class WalSegment:
    timeline: int
    segno: int
    key: str
    size: int
    last_modified: datetime


@dataclass
class WalArchive:
    segment_size: int | None = None
    segments: dict[int, dict[int, WalSegment]] = field(default_factory=dict)  # tli → segno → segment
    histories: dict[int, list[TimelineEntry]] = field(default_factory=dict)  # tli → parsed history
    history_keys: dict[int, str] = field(default_factory=dict)
    backup_files: dict[str, str] = field(default_factory=dict)  # "<seg>.<off>.backup" → key
    # segment base name → its object, while a catalog is built: a format lists the archive before
    # it knows the segment size, then indexes these into ``segments``
    raw: dict[str, ObjectInfo] = field(default_factory=dict, repr=False, compare=False)

    def timelines(self) -> list[int]:
        return sorted(set(self.segments) | set(self.history_keys))

    def newest_segno(self, tli: int) -> int | None:
        """The newest archived segment replay can reach along ``tli``'s history.

        Right after a failover the new timeline may have a history file and no segment yet:
        the newest WAL on its path then still lies on an ancestor.
        """
        own = self.segments.get(tli)
        if own:
            return max(own)
        try:
            chain = self.ancestry(tli)
        except KeyError:
            return None
        size = self.segment_size
        best = None
        for t, _begin, end in chain[:-1]:
            limit = segno_of(end, size) if (end is not None and size) else None
            fit = [s for s in self.segments.get(t, {}) if limit is None or s <= limit]
            if fit:
                best = max(fit) if best is None else max(best, max(fit))
        return best

    def ancestry(self, tli: int) -> list[tuple[int, int, int | None]]:
        """``[(timeline, begin_lsn, end_lsn or None)]`` from the oldest ancestor to ``tli``.

        Raises ``KeyError`` when a timeline above 1 has no history file: its ancestry (and so
        whether it descends from a backup) cannot be known.
        """
        if tli == 1 and 1 not in self.histories:
            return [(1, 0, None)]
        entries = self.histories[tli]
        chain: list[tuple[int, int, int | None]] = []
        begin = 0
        for entry in entries:
            chain.append((entry.parent, begin, entry.switchpoint))
            begin = entry.switchpoint
        chain.append((tli, begin, None))
        return chain

    def descends_from(self, tli: int, backup: Backup) -> bool:
        """Can recovery from ``backup`` follow timeline ``tli``? (its fork lies past the backup end)"""
        if tli == backup.timeline:
            return True
        try:
            chain = self.ancestry(tli)
        except KeyError:
            return False
        for t, _begin, end in chain:
            if t == backup.timeline:
                return end is None or end >= backup.stop_lsn
        return False

    def needed_segments(self, tli: int, start_lsn: int, end_lsn: int | None) -> list[tuple[int, int]]:
        """``[(timeline, segno)]`` replay reads from ``start_lsn`` to ``end_lsn`` along ``tli``.

        The segment holding a switchpoint is read from the child timeline, as PostgreSQL does.
        ``end_lsn=None`` means up to the newest archived segment of ``tli``.
        """
        size = self.segment_size
        assert size, "segment size unknown"
        last = segno_of(end_lsn, size) if end_lsn is not None else self.newest_segno(tli)
        first = segno_of(start_lsn, size)
        if last is None:
            return []
        try:
            chain = self.ancestry(tli)
        except KeyError:  # the backup's own timeline without its history file: nothing forks here
            chain = [(tli, 0, None)]
        out = []
        for segno in range(first, last + 1):
            seg_tli = chain[-1][0]
            for t, begin, _end in reversed(chain):
                if segno_of(begin, size) <= segno:
                    seg_tli = t
                    break
            out.append((seg_tli, segno))
        return out

    def missing(self, needed: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(t, s) for t, s in needed if s not in self.segments.get(t, {})]


@dataclass
class Catalog:
    source: str  # description of the store
    format: str
    backups: list[Backup]  # oldest first (by stop LSN)
    wal: WalArchive
    selector: str | None = None  # stanza/server picked, when the repository holds several
    latest: str | None = None  # what the format calls its newest backup (WAL-G: the newest sentinel)
    wal_check: Any = None  # the format's own continuity report (walg: wal-verify integrity + timeline)
    unfinished: list[Unfinished] = field(default_factory=list)  # in progress: listed, skipped by every target

    def backup(self, name: str) -> Backup | None:
        """The backup called ``name``; ``LATEST`` is the format's newest (else the last to end)."""
        if name == "LATEST":
            name = self.latest or (self.backups[-1].name if self.backups else "")
        return next((b for b in self.backups if b.name == name), None)
