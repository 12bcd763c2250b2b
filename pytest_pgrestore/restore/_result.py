"""What a restore produced: the outcome and the evidence behind it (plain data)."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Outcome", "Attempt", "RestoreResult"]


class Outcome(str, enum.Enum):
    REACHED = "REACHED"  # the requested point was proven reached
    ENDED_EARLY = "ENDED_EARLY"  # recovery ended before the configured target
    TRUNCATED = "TRUNCATED"  # `latest` stopped short of the newest archived WAL
    CORRUPT_WAL = "CORRUPT_WAL"  # replay met a record that fails its checks
    PAUSED_PARAMS = "PAUSED_PARAMS"  # recovery paused: a parameter is lower than on the primary
    RESTORE_COMMAND_ABORT = "RESTORE_COMMAND_ABORT"  # the WAL delivery failed hard, server aborted
    START_FAILED = "START_FAILED"  # the server did not start
    TIMEOUT = "TIMEOUT"  # --restore-timeout elapsed
    REFUSED_PREFLIGHT = "REFUSED_PREFLIGHT"  # the plan showed the target unreachable; nothing fetched
    SPLIT_TIMELINE = "SPLIT_TIMELINE"  # the newest timeline is not the line that went on furthest; nothing fetched

    def __str__(self) -> str:
        return self.value


@dataclass
class Attempt:
    """One recovery run (``xid:``/``name:`` targets may try several backups)."""

    backup: str
    outcome: Outcome
    detail: str = ""


@dataclass
class RestoreResult:
    source: str
    format: str
    target: str
    backup: str | None = None
    outcome: Outcome | None = None
    detail: str = ""  # one paragraph: why this outcome
    backup_start_lsn: str | None = None
    backup_stop_lsn: str | None = None
    backup_stop_time: str | None = None
    pg_version: int | None = None
    timeline: int | None = None  # timeline replay ended on
    replay_lsn: str | None = None  # end of the last replayed record
    last_replay_time: str | None = None  # pg_last_xact_replay_timestamp(), read before any restart
    archive_end_lsn: str | None = None  # end of the newest archived segment on the target timeline
    stop_reason: str | None = None  # the log line that ended recovery
    phases: dict[str, float] = field(default_factory=dict)  # seconds, in order
    bytes_fetched: int = 0
    wal_segments: int = 0  # segments delivered to replay
    attempts: list[Attempt] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)  # e.g. where auto.conf was kept
    started_at: str | None = None  # wall clock (UTC) when the restore began: RTO's start
    first_query_at: str | None = None  # the first successful query on the restored database
    rto_seconds: float | None = None  # first query - start, from monotonic clock reads
    recency: dict[str, Any] = field(default_factory=dict)  # RPO: candidates, which one was used, gap
    wal_prefetch: dict[str, Any] = field(default_factory=dict)  # beside the phases: bytes, busy, waited

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.REACHED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome) if self.outcome else None
        data["attempts"] = [{**asdict(a), "outcome": str(a.outcome)} for a in self.attempts]
        return data
