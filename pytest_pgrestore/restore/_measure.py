"""Measured RTO and RPO of one restore: where recovery became consistent, what replay waited
for, and how recent the restored data is.

RTO is read from the phase clock (:class:`~pytest_pgrestore.restore._restorer._Phases`).  Data recency
(the achieved RPO) follows recovery-facts §6.4:

* a time or LSN target: the last replayed commit (``pg_last_xact_replay_timestamp()``, read
  before any restart) and, for a time target, its gap to the target;
* ``latest``: the run's start minus the newest of three candidates — the last replayed commit,
  an optional heartbeat query on the restored database, and the LastModified of the newest
  replayed WAL segment in the store.  All three are recorded with the one used, so a quiet
  database (no commit for hours, but WAL archived by ``archive_timeout``) does not fail falsely.
  The candidates come from the primary's clock and the store's clock, not the runner's.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["consistent_at", "after_replay", "first_query", "recency", "newest_replayed_segment"]

_CONSISTENT = "consistent recovery state reached"
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC ")


def consistent_at(log_file: Path | None, *, start: float, end: float, wall0: float,
                  t0: float) -> tuple[float, str]:
    """The monotonic moment recovery became consistent, from the server log's own timestamp
    (log_line_prefix ``%m``, UTC), clamped to ``[start, end]``; ``end`` when the log lacks it."""
    try:
        lines = log_file.read_text(errors="replace").splitlines() if log_file else []
    except OSError:
        lines = []
    for line in lines:
        if _CONSISTENT in line and (m := _LOG_TIME.match(line)):
            wall = datetime.fromisoformat(m.group(1)).replace(tzinfo=timezone.utc).timestamp()
            return min(max(t0 + (wall - wall0), start), end), "server log"
    return end, "not in the server log: the whole recovery counts as start_to_consistent"


def newest_replayed_segment(wal, replay_lsn: int | None, timelines: list[int]):
    """The archived segment replay ended in (a :class:`~pytest_pgrestore.formats._catalog.WalSegment`)."""
    size = wal.segment_size
    if replay_lsn is None or not size:
        return None
    segno = max(replay_lsn - 1, 0) // size  # an end on a segment boundary belongs to the one before
    for tli in timelines:
        seg = wal.segments.get(tli, {}).get(segno)
        if seg is not None:
            return seg
    return None


def after_replay(result, *, spool, wal, plan, replay_lsn: int | None) -> None:
    """Record the WAL prefetch beside the phases and the newest replayed segment's LastModified."""
    stats = spool.stats
    result.wal_prefetch = {
        "segments": stats.segments,
        "bytes": stats.bytes,
        "busy_seconds": round(stats.busy_seconds, 3),  # summed over the fetch threads
        "replay_waited_seconds": round(getattr(stats, "waited_seconds", 0.0), 3),
        "on_demand": len(stats.on_demand),
    }
    b = plan.backup
    result.evidence["backup"] = {"start_time": _iso(b.start_time), "stored_bytes": b.stored_bytes, "size": b.size}
    try:
        chain = [t for t, _b, _e in reversed(wal.ancestry(plan.timeline))]
    except KeyError:
        chain = [plan.timeline]
    seg = newest_replayed_segment(wal, replay_lsn, chain)
    result.recency["newest_segment"] = seg.key if seg else None
    result.recency["newest_segment_modified"] = _iso(seg.last_modified) if seg else None


def first_query(inst, clock, settings) -> None:
    """Run the first query on the drilled database (that closes RTO), then the heartbeat query."""
    with inst.admin_connect(settings.dbname, autocommit=True) as conn:
        conn.execute("select 1").fetchone()
    clock.first_query()
    result = inst.result
    query = getattr(settings, "heartbeat_query", None)
    if query:
        result.recency["heartbeat_query"] = query
        try:
            with inst.admin_connect(settings.dbname, options="-c default_transaction_read_only=on") as conn:
                row = conn.execute(query).fetchone()
                conn.rollback()
            result.recency["heartbeat"] = _iso(_as_time(row[0] if row else None))
        except Exception as exc:  # noqa: BLE001 — recorded; a budget check names it
            result.recency["heartbeat"] = None
            result.recency["heartbeat_error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    result.recency.update(recency(result, settings.target))


def recency(result, target) -> dict[str, Any]:
    """How recent the restored data is (pure): the fields below, merged into ``result.recency``.

    ``seconds`` is the achieved RPO when it can be measured: ``latest`` → start − newest
    candidate; a time target → target − last replayed commit; otherwise None.
    """
    commit = _parse(result.last_replay_time)
    out: dict[str, Any] = {"last_commit": _iso(commit), "kind": target.kind, "seconds": None, "used": None}
    if target.kind == "latest":
        candidates = {"last_commit": commit, "heartbeat": _parse(result.recency.get("heartbeat")),
                      "newest_segment_modified": _parse(result.recency.get("newest_segment_modified"))}
        known = {k: v for k, v in candidates.items() if v is not None}
        start = _parse(result.started_at)
        out["reference"] = result.started_at
        if known and start:
            used = max(known, key=lambda k: known[k])
            out["used"] = used
            out["seconds"] = round(max((start - known[used]).total_seconds(), 0.0), 3)
    elif target.kind == "time" and commit is not None:
        out["used"] = "last_commit"
        out["target_gap_seconds"] = round((target.time - commit).total_seconds(), 3)
        out["seconds"] = max(out["target_gap_seconds"], 0.0)
    elif target.kind == "lsn" and result.replay_lsn:
        from ..settings._target import format_lsn, parse_lsn

        out["target_lsn"] = format_lsn(target.lsn)
        out["target_gap_bytes"] = parse_lsn(result.replay_lsn) - target.lsn
    return out


def _as_time(value) -> datetime | None:
    """A heartbeat value: timestamptz, naive timestamp (taken as UTC), epoch seconds or ISO text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), timezone.utc)
    return _parse(str(value))


def _parse(text) -> datetime | None:
    if text is None:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _iso(value) -> str | None:
    value = _parse(value) if not isinstance(value, datetime) or value.tzinfo is None else value
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds") if value else None
