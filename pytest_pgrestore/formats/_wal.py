"""WAL file names, LSNs, segment arithmetic and timeline history (pure).

Nothing here assumes 16 MB segments: every function that maps LSNs to segments takes the
segment size, which the formats learn from what PostgreSQL wrote (``.backup`` files,
``backup_label``, ``pg_control``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "SEGMENT_RE",
    "HISTORY_RE",
    "BACKUP_HISTORY_RE",
    "SegmentName",
    "TimelineEntry",
    "segment_name",
    "parse_segment_name",
    "segno_of",
    "segment_start",
    "segments_per_xlogid",
    "parse_history",
    "infer_segment_size",
]

# \Z, not $: "$" also matches before a trailing newline
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\Z")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history\Z")
BACKUP_HISTORY_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup\Z")

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30


@dataclass(frozen=True, order=True)
class SegmentName:
    timeline: int
    segno: int  # absolute segment number: lsn // segment_size

    def name(self, segment_size: int) -> str:
        return segment_name(self.timeline, self.segno, segment_size)


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a ``.history`` file: ``parent`` timeline ended at ``switchpoint``."""

    parent: int
    switchpoint: int  # LSN where the child timeline forked off the parent
    reason: str = ""


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, segment_size: int) -> SegmentName:
    m = SEGMENT_RE.match(name)
    if not m:
        raise ValueError(f"not a WAL segment name: {name!r}")
    tli, log, seg = (int(g, 16) for g in m.groups())
    per = segments_per_xlogid(segment_size)
    if seg >= per:
        raise ValueError(f"{name}: segment part {seg:#x} impossible for {segment_size} byte segments")
    return SegmentName(tli, log * per + seg)


def segno_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def segment_start(segno: int, segment_size: int) -> int:
    return segno * segment_size


def infer_segment_size(lsn: int, name: str) -> int | None:
    """The segment size for which WAL file ``name`` contains ``lsn``.

    PostgreSQL writes both in ``backup_label`` and ``.backup`` files
    (``START WAL LOCATION: 0/2000028 (file 000000010000000000000002)``); usually exactly one
    power of two between 1 MB and 1 GB makes them agree.  In the first megabyte of a log id
    (``1/28`` in ``000000010000000100000000``) every size agrees: then None, and the size must
    come from a WAL page header instead.
    """
    m = SEGMENT_RE.match(name)
    if not m:
        raise ValueError(f"not a WAL segment name: {name!r}")
    _, log, seg = (int(g, 16) for g in m.groups())
    fits = []
    size = MIN_SEGMENT_SIZE
    while size <= MAX_SEGMENT_SIZE:
        per = segments_per_xlogid(size)
        if seg < per and log * per + seg == lsn // size:
            fits.append(size)
        size <<= 1
    if not fits:
        raise ValueError(f"no WAL segment size puts LSN {lsn:#x} in {name}")
    return fits[0] if len(fits) == 1 else None


def parse_history(text: str) -> list[TimelineEntry]:
    """Parse a timeline history file (``<parentTLI>\\t<switchpoint>\\t<reason>`` lines).

    Refuses what PostgreSQL's readTimeLineHistory refuses: a line without a numeric timeline
    or a switchpoint, and timeline IDs that do not increase.
    """
    from ..settings._target import parse_lsn

    entries: list[TimelineEntry] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 2 or not fields[0].isascii() or not fields[0].isdigit():
            raise ValueError(f"malformed history line: {line!r}")
        tli = int(fields[0])
        if entries and tli <= entries[-1].parent:
            raise ValueError(f"timeline IDs must increase in a history file: {line!r}")
        entries.append(TimelineEntry(tli, parse_lsn(fields[1]), fields[2] if len(fields) > 2 else ""))
    return entries
