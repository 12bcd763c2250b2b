"""``pgrestore``: the runbook's commands on the same engine as the pytest plugin.

Exit codes: 0 ok, 1 a verdict or check failed, 3 internal error, 4 usage error (argparse's 2 is
mapped to 4, as pytest does).  ``wal-fetch`` follows restore_command's contract instead: 0 the
file was written, 1 confirmed absent, 2xx anything else (so PostgreSQL aborts, never ends early).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ..errors import PgRestoreError, UsageError
from ..settings._options import OPTIONS, resolve_settings
from ..settings._target import KINDS as TARGET_KINDS
from . import _commands as commands
from ._common import EXIT_INTERNAL, EXIT_USAGE

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2; usage errors are 4 here as in pytest
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, *, target: bool = False) -> None:
    p.add_argument("source", nargs="?", help="s3://bucket/prefix, file:///path or /path "
                   "(default: env PGRESTORE_SOURCE, then WALG_S3_PREFIX / WALG_FILE_PREFIX)")
    p.add_argument("--format", choices=next(s.choices for s in OPTIONS if s.name == "format"),
                   help="backup layout (default: auto)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    if target:
        p.add_argument("--target", help="latest, immediate, oldest, backup:NAME (or the bare name), "
                       "an RFC 3339 time, lsn:X/Y, xid:N or name:POINT (default: latest)")
        p.add_argument("--timeline", help="latest, current or a timeline id (default: latest)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgrestore", description="Check and restore PostgreSQL backups: list, plan, "
                     "verify and restore them, with a verdict on whether the requested point was reached.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("list", help="backups with times, LSNs, sizes, versions")
    p.set_defaults(run=commands.cmd_list)
    _common(p)
    p = sub.add_parser("plan", help="which backup and WAL a target needs, and whether it is all there")
    p.set_defaults(run=commands.cmd_plan)
    _common(p, target=True)
    p = sub.add_parser("verify", help="the daily check: recent backups exist, WAL is continuous")
    p.set_defaults(run=commands.cmd_verify)
    _common(p)
    p.add_argument("--min-backups", type=int, default=1, metavar="N", help="at least N backups (default 1)")
    p.add_argument("--max-age", metavar="DURATION", help="newest backup younger than this, e.g. 26h")
    p = sub.add_parser("restore", help="restore into a directory, prove the target, print the DSN")
    p.set_defaults(run=commands.cmd_restore)
    _common(p, target=True)
    p.add_argument("--pgdata", required=True, help="new or empty directory for the restored cluster")
    p.add_argument("--listen-port", type=int, metavar="PORT", help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--keep-running", action="store_true", help="leave the server running afterwards")
    p.add_argument("--timeout", help="limit for the whole restore (default 6h)")
    p = sub.add_parser("gate", help="did a drill of this source pass within --max-age? (from evidence records)",
                       description="Exit 0 when the newest drill of --source in the evidence passed within "
                       "--max-age (and within the RTO/RPO budgets given), else 1 with the reason.")
    p.set_defaults(run=commands.cmd_gate)
    p.add_argument("--evidence", required=True, metavar="DIR|URL",
                   help="where the evidence records (--restore-report files) are: a directory, or an "
                   "s3:// evidence bucket that is not the backups' bucket")
    p.add_argument("--source", help="the backup source the drill restored (default: env PGRESTORE_SOURCE)")
    p.add_argument("--max-age", required=True, metavar="DURATION", help="e.g. 7d or 36h")
    p.add_argument("--target-kind", action="append", choices=TARGET_KINDS, metavar="KIND",
                   help="require a passing drill of this target kind (repeatable: latest, time, ...)")
    p.add_argument("--max-rto", metavar="DURATION", help="the drill's measured RTO must be within this")
    p.add_argument("--max-rpo", metavar="DURATION", help="the drill's measured RPO must be within this")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("wal-fetch", help="restore_command helper: fetch one WAL file by name")
    p.set_defaults(run=commands.wal_fetch, settings=False)  # restore_command's exit codes, its own errors
    p.add_argument("source", help="the backup source")
    p.add_argument("name", help="%%f: the WAL file name PostgreSQL asks for")
    p.add_argument("path", help="%%p: where to write it")
    p.add_argument("--format", help="backup layout (default: auto)")
    return parser


def _settings(args: argparse.Namespace):
    cli = {"source": args.source, "format": getattr(args, "format", None),
           "target": getattr(args, "target", None), "timeline": getattr(args, "timeline", None),
           "timeout": getattr(args, "timeout", None)}
    settings = resolve_settings(cli=cli, env=dict(os.environ), ini={})
    settings.require_source()
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if getattr(args, "settings", True) is False:
        return args.run(args)
    try:
        return args.run(args, _settings(args))
    except UsageError as exc:
        print(f"pgrestore: usage error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PgRestoreError as exc:
        return commands.report_failure(args, exc)
    except KeyboardInterrupt:
        print("pgrestore: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — an internal error gets exit 3, not a bare traceback
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        print(f"pgrestore: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
