"""``wal-g wal-verify integrity timeline``, computed from the catalog's listing (pure: no I/O).

Same walk as WAL-G (``internal/databases/postgres/integrity_check_runner.go``,
``wal_segment_runner.go``, ``wal_segment_scanner.go``, ``timeline_check_runner.go``):

* start at the newest segment of the highest timeline in storage (WAL-G asks the server for its
  current LSN; a drill has no server, so the newest archived segment stands in for it);
* walk backwards one segment at a time; at a switch point of the current timeline's history the
  walk continues on the parent timeline, unless the same timeline's previous segment exists
  (then the switch is "not from our history");
* stop at the start segment of the earliest non-permanent backup that belongs to this history,
  or at segment 1 when there is none;
* missing segments are MISSING_DELAYED within ``WALG_INTEGRITY_MAX_DELAYED_WALS`` (default 0) of
  the start, MISSING_UPLOADING within the next ``WALG_UPLOAD_CONCURRENCY`` (default 16), and
  MISSING_LOST beyond; runs of equal (timeline, status) are collapsed.

Status: FAILURE on any LOST run (a WARNING when no backup exists and nothing was found before it),
WARNING on DELAYED/UPLOADING runs, else OK.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._catalog import Backup, WalArchive
from ._wal import segment_name, segno_of

__all__ = ["SegmentRun", "WalVerifyReport", "wal_verify"]

FOUND, LOST, UPLOADING, DELAYED = "FOUND", "MISSING_LOST", "MISSING_UPLOADING", "MISSING_DELAYED"


@dataclass(frozen=True)
class SegmentRun:
    timeline_id: int
    start_segment: str
    end_segment: str
    segments_count: int
    status: str


@dataclass
class WalVerifyReport:
    integrity_status: str
    runs: list[SegmentRun] = field(default_factory=list)
    timeline_status: str = "OK"
    current_timeline: int | None = None
    highest_storage_timeline: int | None = None
    stop_backup: str | None = None  # the backup whose start ends the scan

    def as_json(self) -> dict:
        """The shape ``wal-g wal-verify integrity timeline --json`` prints."""
        return {"integrity": {"status": self.integrity_status, "details": [r.__dict__ for r in self.runs]},
                "timeline": {"status": self.timeline_status,
                             "details": {"current_timeline_id": self.current_timeline,
                                         "highest_storage_timeline_id": self.highest_storage_timeline}}}

    @property
    def missing(self) -> list[SegmentRun]:
        return [r for r in self.runs if r.status != FOUND]


def _switch_map(wal: WalArchive, tli: int, size: int) -> dict[int, int]:
    """segno of each switch point in ``tli``'s history → the parent timeline."""
    return {segno_of(e.switchpoint, size): e.parent for e in wal.histories.get(tli, [])}


def _stop(wal: WalArchive, backups: list[Backup], tli: int, size: int) -> tuple[int, str | None]:
    switch_by_tli = {e.parent: segno_of(e.switchpoint, size) for e in wal.histories.get(tli, [])}
    best: tuple[int, str] | None = None
    for b in backups:
        if b.details.get("permanent"):
            continue
        start = segno_of(b.start_lsn, size)
        if b.timeline != tli and (b.timeline not in switch_by_tli or start >= switch_by_tli[b.timeline]):
            continue  # not on this history, or started after its timeline forked away
        if best is None or start < best[0]:
            best = (start, b.name)
    return best if best else (1, None)


def wal_verify(wal: WalArchive, backups: list[Backup], *, upload_window: int = 16, delayed: int = 0,
               timeline: int | None = None, start_segno: int | None = None) -> WalVerifyReport:
    size = wal.segment_size or 16 << 20
    present = {(t, s) for t, segs in wal.segments.items() for s in segs}
    highest = max([t for t, _ in present] + list(wal.history_keys), default=None)
    tli = timeline if timeline is not None else highest
    report = WalVerifyReport(integrity_status="OK", current_timeline=tli, highest_storage_timeline=highest)
    report.timeline_status = "WARNING" if highest is None else ("OK" if highest == tli else "FAILURE")
    if tli is None:
        report.integrity_status = "WARNING"
        return report
    if start_segno is None:
        newest = wal.newest_segno(tli)
        start_segno = (newest + 1) if newest is not None else 1
    switches = _switch_map(wal, tli, size)
    stop, report.stop_backup = _stop(wal, backups, tli, size)
    scanned = _scan((tli, start_segno), present, switches, stop, upload_window, delayed)
    report.runs = _collapse(scanned, size)
    report.integrity_status = _status(report.runs, no_backups=report.stop_backup is None)
    return report


def _scan(start, present, switches, stop, upload_window, delayed) -> list[tuple[int, int, str]]:
    cur = start
    out: list[tuple[int, int, str]] = []

    def step() -> tuple[int, int] | None:
        if cur[1] <= stop:
            return None
        nxt = (cur[0], cur[1] - 1)
        if cur[1] in switches and nxt not in present:
            nxt = (switches[cur[1]], cur[1] - 1)
        return nxt

    def scan(limit: int | None, missing: str, stop_on_found: bool) -> None:
        nonlocal cur
        n = 0
        while limit is None or n < limit:
            n += 1
            nxt = step()
            if nxt is None:
                return
            cur = nxt
            out.append((cur[0], cur[1], FOUND if cur in present else missing))
            if stop_on_found and cur in present:
                return

    scan(delayed, DELAYED, True)
    scan(upload_window, UPLOADING, False)
    scan(None, LOST, False)
    return out


def _collapse(scanned: list[tuple[int, int, str]], size: int) -> list[SegmentRun]:
    runs: list[SegmentRun] = []
    group: list[tuple[int, int, str]] = []
    for item in sorted(scanned, key=lambda x: x[1]):
        if group and (item[0] != group[0][0] or item[2] != group[0][2]):
            runs.append(_run(group, size))
            group = []
        group.append(item)
    if group:
        runs.append(_run(group, size))
    return runs


def _run(group, size) -> SegmentRun:
    t = group[0][0]
    return SegmentRun(t, segment_name(t, group[0][1], size), segment_name(t, group[-1][1], size), len(group),
                      group[0][2])


def _status(runs: list[SegmentRun], *, no_backups: bool) -> str:
    status, prev_found = "OK", False
    for r in runs:
        if r.status == FOUND:
            prev_found = True
        elif r.status == LOST:
            if no_backups and not prev_found:
                status = "WARNING"
            else:
                return "FAILURE"
        else:
            status = "WARNING"
    return status
