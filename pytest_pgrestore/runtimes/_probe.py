"""Where recovery is, asked of a server over its unix socket (the local runtime, and the docker
runtime when its socket is shared with this machine)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PgRestoreError

if TYPE_CHECKING:
    import psycopg

__all__ = ["Probe", "Prober"]


@dataclass
class Probe:
    promoted: bool = False
    paused: bool = False
    replay_lsn: int | None = None
    last_replay_time: datetime | None = None
    timeline: int | None = None


_PROBE_SQL = ("select pg_is_in_recovery(), "
              "case when pg_is_in_recovery() then pg_get_wal_replay_pause_state() end, "
              "pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()")


class Prober:
    """Asks the server where recovery is over one connection, kept between calls.

    A new connection every poll costs the server a fork and a backend start-up next to the
    startup process replaying WAL on a CI runner's few cores; one kept connection costs a query.
    Between polls the session is idle in autocommit: no snapshot, no lock, nothing replay could
    conflict with.  A connection that breaks (the server ended recovery with a FATAL, or shut
    down) is dropped and the next call connects again.
    """

    def __init__(self, socket_dir: Path, port: int) -> None:
        self.socket_dir, self.port = socket_dir, port
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, user: str) -> Probe | None:
        import psycopg

        from ..settings._target import parse_lsn

        if self.conn is None:
            try:
                self.conn = psycopg.connect(host=str(self.socket_dir), port=self.port, user=user,
                                            dbname="template1", connect_timeout=3, autocommit=True)
            except psycopg.OperationalError as exc:
                if re.search(r'role "[^"]+" does not exist', str(exc)):
                    raise PgRestoreError(f"the restored cluster has no role {user!r}",
                                         checked="connecting to the restored server as --restore-user",
                                         fix="set --restore-user (env PGRESTORE_USER) to a role that exists "
                                             "in the backup") from exc
                return None
        try:
            row = self.conn.execute(_PROBE_SQL).fetchone()
        except psycopg.OperationalError:
            self.close()  # the server went down between polls (e.g. FATAL at the end of recovery)
            return None
        assert row is not None, "the probe selects one row, without a FROM"
        in_recovery, pause, lsn, ts = row
        return Probe(promoted=not in_recovery, paused=pause == "paused",
                     replay_lsn=parse_lsn(lsn) if lsn else None, last_replay_time=ts)

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()


