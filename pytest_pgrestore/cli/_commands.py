"""The bodies of the ``pgrestore`` subcommands (kept apart from argument parsing)."""

from __future__ import annotations

import shlex
import sys
import time

from .._fmt import human_bytes
from ..checks._listing import verify as verify_catalog
from ..errors import PgRestoreError
from ..restore._plan import make_plan
from ..restore._restorer import Restorer
from ..settings._options import Settings, parse_duration
from ..settings._target import format_lsn
from ._common import EXIT_FAILED, EXIT_OK, duration, json_print


def _time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%SZ") if t else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def cmd_list(args, settings: Settings) -> int:
    catalog = Restorer(settings).catalog()
    if args.json:
        json_print({"source": catalog.source, "format": catalog.format, "backups": [
            {"name": b.name, "start_time": b.start_time, "stop_time": b.stop_time,
             "start_lsn": format_lsn(b.start_lsn), "stop_lsn": format_lsn(b.stop_lsn), "timeline": b.timeline,
             "pg_version": b.pg_major, "stored_bytes": b.stored_bytes, "size": b.size,
             "incremental": b.incremental} for b in catalog.backups],
            "unfinished": [{"name": u.name, "state": u.state, "reason": u.reason} for u in catalog.unfinished]})
        return EXIT_OK
    print(f"{catalog.source} ({catalog.format}): {len(catalog.backups)} backup(s)")
    rows = [[b.name, _time(b.start_time), _time(b.stop_time), format_lsn(b.start_lsn), format_lsn(b.stop_lsn),
             str(b.timeline), str(b.pg_major or "?"), human_bytes(b.stored_bytes)] for b in catalog.backups]
    if rows:
        print(_table(rows, ["NAME", "START", "STOP", "START LSN", "STOP LSN", "TLI", "PG", "STORED"]))
    for u in catalog.unfinished:  # never chosen by a target (issue 19)
        print(f"{u.name}  {u.state}: {u.reason}")
    return EXIT_OK


def cmd_plan(args, settings: Settings) -> int:
    restorer = Restorer(settings)
    catalog = restorer.catalog()
    p = make_plan(catalog, settings.target, timeline=settings.timeline, inclusive=settings.target_inclusive)
    data = {"ok": True, "source": catalog.source, "format": catalog.format, "target": str(p.target),
            "backup": p.backup.name, "backup_stop_lsn": format_lsn(p.backup.stop_lsn),
            "backup_stop_time": p.backup.stop_time, "timeline": p.timeline,
            "wal_first": p.segments[0] if p.segments else None, "wal_last": p.segments[-1] if p.segments else None,
            "wal_segments": len(p.segments),
            "archive_end_lsn": format_lsn(p.archive_end_lsn) if p.archive_end_lsn else None,
            "recovery": p.recovery, "fallback_backups": [b.name for b in p.fallbacks]}
    if args.json:
        json_print(data)
        return EXIT_OK
    print(f"target {p.target}: reachable from the listing")
    print(f"  backup     {p.backup.name} (consistent at {format_lsn(p.backup.stop_lsn)}, "
          f"{_time(p.backup.stop_time)})")
    print(f"  timeline   {p.timeline}")
    print(f"  WAL        {len(p.segments)} segment(s)"
          + (f": {p.segments[0]} … {p.segments[-1]}, all archived" if p.segments else ""))
    print(f"  archive    ends at {data['archive_end_lsn'] or '-'}")
    if p.fallbacks and p.target.needs_replay_search:
        print(f"  if {p.target} is not in that WAL: then {', '.join(b.name for b in p.fallbacks)}")
    return EXIT_OK


def cmd_verify(args, settings: Settings) -> int:
    catalog = Restorer(settings).catalog()
    report = verify_catalog(catalog, min_backups=args.min_backups,
                            max_age=duration(args.max_age, "--max-age"))
    if args.json:
        json_print(report.to_dict())
        return EXIT_OK if report.ok else EXIT_FAILED
    b = report.backups
    print(f"{report.source} ({report.format}): {'OK' if report.ok else 'FAILED'}")
    print(f"  backups    {b.count} (newest {b.newest or '-'}"
          + (f", finished {int(b.newest_age_seconds // 3600)}h{int(b.newest_age_seconds % 3600 // 60):02d}m ago)"
             if b.newest_age_seconds is not None else ")"))
    for problem in b.problems:
        print(f"  PROBLEM    {problem}")
    if not report.wal:
        print("  PROBLEM    no archived WAL from the oldest backup on")
    for run in report.wal:
        span = run.first if run.count == 1 else f"{run.first} … {run.last}"
        print(f"  WAL tli {run.timeline:<3} {run.status:<8} {span} ({run.count} segment(s))")
    for problem in report.problems:  # of the WAL: a split history
        print(f"  PROBLEM    {problem}")
    if report.reachable_until:
        print(f"  replay from the oldest backup reaches {report.reachable_until} without a gap")
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_restore(args, settings: Settings) -> int:
    from pathlib import Path

    from ..restore._rundir import write_private

    started = time.monotonic()
    with Restorer(settings).restore(pgdata=Path(args.pgdata).absolute(), port=args.listen_port,
                                    keep_running=args.keep_running) as inst:
        r = inst.result
        if args.json:
            json_print({**r.to_dict(), "pgdata": str(Path(args.pgdata).absolute()), "port": inst.port,
                         "kept_running": args.keep_running})
        else:
            print(f"restore of {r.source} to {r.target}: {r.outcome}")
            print(f"  {r.detail}")
            print(f"  backup {r.backup}, {r.wal_segments} WAL segment(s), "
                  f"{time.monotonic() - started:.1f}s; PGDATA {args.pgdata}")
        if args.keep_running:
            run_dir = inst.run_dir
            write_private(run_dir / "password", inst.password + "\n")  # never through a planted symlink
            from psycopg.conninfo import make_conninfo

            conninfo = make_conninfo(host="127.0.0.1", port=inst.port, user=inst.user, dbname=inst.dbname)
            print(f"  server running on 127.0.0.1:{inst.port} — connect with:\n"
                  f"    psql {shlex.quote(conninfo)} "
                  f"(password in {run_dir}/password)\n"
                  f"  stop it with:\n    kill -INT $(cat {run_dir}/supervisor.pid)   "
                  f"# then remove {run_dir} and {args.pgdata}\n"
                  "  WARNING: this is a copy of production data; delete it when done.", file=sys.stderr)
    return EXIT_OK


def report_failure(args, exc: PgRestoreError) -> int:
    result = getattr(exc, "result", None)
    if getattr(args, "json", False):
        json_print({"ok": False, "error": type(exc).__name__, "message": str(exc),
                     "result": result.to_dict() if result is not None else None})
    else:
        print(f"pgrestore: {exc}", file=sys.stderr)
        if result is not None and result.log_tail:
            print("  server log (last lines):\n    " + "\n    ".join(result.log_tail[-12:]), file=sys.stderr)
    return EXIT_FAILED


def cmd_gate(args, settings: Settings) -> int:
    """``pgrestore gate``: 0 when a drill of the source passed recently enough, else 1."""
    from ..evidence._gate import decide, evidence_location, load

    source = settings.require_source().describe()
    where = evidence_location(args.evidence, source=source)
    docs, problems = load(where, env=settings.env)
    result = decide(docs, source=source, max_age=parse_duration(args.max_age, origin="--max-age"),  # required
                    target_kinds=args.target_kind or (), max_rto=duration(args.max_rto, "--max-rto"),
                    max_rpo=duration(args.max_rpo, "--max-rpo"))
    if not docs:
        result.reasons.insert(0, f"no evidence record under {where.describe()}" + (f" ({'; '.join(problems)})"
                                                                                if problems else ""))
    if args.json:
        json_print({**result.to_dict(), "evidence": where.describe(), "records_read": len(docs),
                     "problems": problems})
    else:
        for line in result.reasons:
            print(line, file=sys.stdout if result.ok else sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def wal_fetch(args) -> int:
    """restore_command for restores by hand: ``pgrestore wal-fetch SOURCE %f %p``."""
    import os
    import shutil

    from ..formats import get_format
    from ..settings._options import resolve_settings
    from ..store import open_store

    try:
        settings = resolve_settings(cli={"source": args.source, "format": args.format}, env=dict(os.environ),
                                    ini={})
        source = settings.require_source()
        fmt = get_format(open_store(source, env=settings.env), settings.format, env=settings.env,
                         selector=source.selector)
        key = fmt.find_wal(args.name)
        if key is None:
            print(f"pgrestore wal-fetch: {args.name} is not in the archive", file=sys.stderr)
            return 1
        tmp = f"{args.path}.pgrestore-tmp"
        with fmt.open_wal(key) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(tmp, args.path)
        return 0
    except BaseException as exc:  # noqa: BLE001 — anything else must abort recovery, never end it
        print(f"pgrestore wal-fetch: {args.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 200
