"""Quarantine a materialized PGDATA, start recovery, watch it, and collect the evidence.

The restored server runs with our own config file and command-line settings that switch off
everything that could reach production: archiving, replication, archive cleanup, preload
libraries, SSL with production's certificates.  Production's ``postgresql.auto.conf`` is moved
aside (kept as evidence) because PostgreSQL always reads it from the data directory.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptBackup
from ..runtimes._base import Binaries, Server
from ..runtimes._probe import Probe
from ._verdict import Observation

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

__all__ = ["quarantine", "control_data", "server_settings", "write_config", "watch", "verify_backup"]

#: Settings that must never take production's values.  They go on the command line, which beats
#: every configuration file, postgresql.auto.conf included (we replace that file as well).
QUARANTINE = {
    "archive_mode": "off",
    "archive_command": "",
    "archive_cleanup_command": "",
    "recovery_end_command": "",
    "primary_conninfo": "",
    "primary_slot_name": "",
    "max_logical_replication_workers": "0",
    "synchronous_standby_names": "",
    "recovery_min_apply_delay": "0",
    "shared_preload_libraries": "",
    "ssl": "off",
    "lc_messages": "C",
    "hot_standby": "on",
    # the copy lives minutes: no autovacuum worker runs production's code (ANALYZE evaluates
    # index expressions as their owner) or competes with the drills for the runner's cores
    "autovacuum": "off",
}
RECOVERY_TARGETS = ("recovery_target", "recovery_target_lsn", "recovery_target_name", "recovery_target_time",
                    "recovery_target_xid")
_CONTROL_PARAMS = {  # pg_controldata line → setting, with our floor
    "max_connections setting": ("max_connections", 100),
    "max_worker_processes setting": ("max_worker_processes", 8),
    "max_wal_senders setting": ("max_wal_senders", 10),
    "max_prepared_xacts setting": ("max_prepared_transactions", 0),
    "max_locks_per_xact setting": ("max_locks_per_transaction", 64),
}


def _run_tool(binaries: Binaries, name: str, args: list[str], *, timeout: float):
    """Run a PostgreSQL utility where ``binaries`` live (here, or in a container)."""
    return binaries.run(name, args, timeout=timeout)


def control_data(binaries: Binaries, pgdata: Path) -> dict[str, str]:
    out = _run_tool(binaries, "pg_controldata", ["-D", str(pgdata)], timeout=60)
    if out.returncode != 0:
        raise CorruptBackup(f"pg_controldata cannot read the restored pg_control: {out.stderr.strip()}",
                            checked=f"{pgdata}/global/pg_control",
                            fix="the backup's pg_control is damaged or from another version")
    data = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            data[key.strip()] = value.strip()
    return data


def verify_backup(binaries: Binaries, pgdata: Path, manifest: Path) -> str:
    """Check every file against the backup_manifest checksums (WAL is checked by replay)."""
    if not binaries.has("pg_verifybackup"):
        return "pg_verifybackup not available: manifest not checked"
    out = _run_tool(binaries, "pg_verifybackup", ["--no-parse-wal", "--manifest-path", str(manifest), str(pgdata)],
                    timeout=3600)
    if out.returncode != 0:
        errors = [ln for ln in out.stderr.splitlines() if ln.strip()][:10]
        raise CorruptBackup("the restored files do not match the backup's manifest",
                            checked="pg_verifybackup --no-parse-wal: " + " | ".join(errors),
                            fix="the backup is corrupt or incomplete in the store; restore from another backup")
    return out.stdout.strip() or "backup successfully verified"


def quarantine(pgdata: Path, evidence: Path) -> dict[str, str]:
    """Remove what would make the copy follow or feed production; keep it as evidence."""
    kept = {}
    # tablespace_map would make PostgreSQL re-point pg_tblspc/<oid> at production's paths; the
    # links to <run dir>/tablespaces/<oid> are already in place
    for name in ("postgresql.auto.conf", "standby.signal", "recovery.conf", "recovery.signal",
                 "postmaster.pid", "postmaster.opts", "tablespace_map"):
        src = pgdata / name
        if src.exists() or src.is_symlink():
            dst = evidence / name
            os.replace(src, dst)
            kept[name] = str(dst)
    (pgdata / "postgresql.auto.conf").write_text("# replaced by pytest-pgrestore; original kept as evidence\n")
    (pgdata / "recovery.signal").write_text("")
    return kept


def server_settings(control: dict[str, str], *, major: int, port: int, socket_dir: Path,
                    restore_command: str, recovery: dict[str, str],
                    preload: tuple[str, ...] = ()) -> dict[str, str]:
    settings = dict(QUARANTINE)
    settings["shared_preload_libraries"] = ",".join(preload)  # only what --restore-preload names
    if major >= 15:
        settings["archive_library"] = ""
    for line, (name, floor) in _CONTROL_PARAMS.items():
        value = control.get(line)
        settings[name] = str(max(int(value), floor) if value and value.isdigit() else floor)
    settings.update(listen_addresses="127.0.0.1", port=str(port), unix_socket_directories=str(socket_dir),
                    restore_command=restore_command)
    # Every recovery target we do not use is set empty, so no file can smuggle one in.  Order
    # matters: PostgreSQL refuses any assignment, even an empty one, to a second kind of target
    # once one is set, so the empties come first and ours last.
    settings.update({name: "" for name in RECOVERY_TARGETS if name not in recovery})
    settings.update(recovery)
    return settings


def write_config(run_dir: Path, settings: dict[str, str]) -> Path:
    """Our postgresql.conf, pg_hba.conf and pg_ident.conf: production's are never read."""
    hba, ident = run_dir / "pg_hba.conf", run_dir / "pg_ident.conf"
    hba.write_text("# pytest-pgrestore: trust only on the private socket; TCP needs the per-run password\n"
                   "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    ident.write_text("")
    fixed = {
        "hba_file": str(hba), "ident_file": str(ident), "log_destination": "stderr",
        "logging_collector": "off", "log_line_prefix": "%m [%p] ", "log_timezone": "UTC",
        "log_min_messages": "info", "fsync": "off", "synchronous_commit": "off",
        "full_page_writes": "on", "max_wal_size": "2GB", "shared_buffers": "128MB",
        "password_encryption": "scram-sha-256", "log_checkpoints": "off",
    }
    conf = run_dir / "postgresql.conf"
    lines = ["# written by pytest-pgrestore for a throwaway restored copy"]
    for name, value in {**fixed, **settings}.items():
        lines.append(f"{name} = '{_quote(value)}'")
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


def watch(server: Server, *, user: str, log_file: Path, deadline: float, spool=None) -> Observation:
    """Poll until recovery ends one way or another; never trust a single signal alone."""
    prober = server.recovery_prober()
    try:
        return _watch(server, prober, user=user, log_file=log_file, deadline=deadline, spool=spool)
    finally:
        prober.close()  # no session of ours stays on the restored server (template1 must be free)


def _watch(server, ask, *, user: str, log_file: Path, deadline: float, spool) -> Observation:
    last: Probe | None = None
    sync_log = server.sync_log  # the log reaches log_file before it is read (a container's, on demand)
    while True:
        exited = server.poll()
        if exited is not None:
            sync_log()
            return _observe(log_file, last, exited=exited, spool=spool)
        state = ask(user)
        if state is not None:
            last = state
            if state.promoted or state.paused:
                if state.paused and not state.promoted:
                    time.sleep(0.5)  # let the WARNING lines naming the parameter reach the log
                sync_log()
                return _observe(log_file, state, exited=None, spool=spool)
        if time.monotonic() > deadline:
            sync_log()
            return _observe(log_file, last, exited=None, spool=spool, timed_out=True)
        time.sleep(0.1)


def _observe(log_file: Path, state: Probe | None, *, exited, spool, timed_out=False) -> Observation:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    return Observation(log_lines=lines, promoted=bool(state and state.promoted), exited=exited,
                       timed_out=timed_out, paused=bool(state and state.paused),
                       replay_lsn=state.replay_lsn if state else None,
                       last_replay_time=state.last_replay_time if state else None,
                       spool_errors=dict(spool.stats.errors) if spool else {},
                       asked_absent=list(spool.stats.absent) if spool else None)


def describe_preload(pgdata: Path, kept: tuple[str, ...]) -> dict:
    """What the backup's configuration preloads, what --restore-preload kept, what stays off.

    Read before the quarantine moves ``postgresql.auto.conf`` aside (ALTER SYSTEM settings count).
    """
    from ._pgconf import configured_value, split_list

    found = configured_value(pgdata, "shared_preload_libraries")
    configured = split_list(found.value or "") if found.known else None
    dropped = [lib for lib in configured if lib not in kept] if configured is not None else None
    if configured is None:
        text = f"the backup's shared_preload_libraries is unknown ({found.why})"
    elif configured:
        text = f"the backup's configuration ({found.source}) preloads {', '.join(configured)}"
    else:
        text = "the backup's configuration preloads no library"
    text += f"; kept: {', '.join(kept) if kept else 'none'}"
    if dropped:
        text += f"; dropped: {', '.join(dropped)} (--restore-preload={','.join(dropped)} keeps them)"
    return {"configured": configured, "configured_in": found.source or None, "unknown_why": found.why or None,
            "kept": list(kept), "dropped": dropped, "summary": text}


_NO_LIBRARY = re.compile(r'could not access file "([^"]+)": No such file or directory')


def missing_preload(log_lines: list[str], kept: tuple[str, ...]) -> list[str]:
    """The --restore-preload libraries the server could not find when it started."""
    missing = {m.group(1) for line in log_lines for m in [_NO_LIBRARY.search(line)] if m}
    return [lib for lib in kept if lib in missing]
