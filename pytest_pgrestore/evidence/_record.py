"""The evidence record of a drill run: one JSON document a promotion gate or an auditor reads.

Pure: built from :class:`~pytest_pgrestore.restore._result.RestoreResult` objects (or their JSON form
from an xdist worker) and the drills' outcomes.  Its schema is published in
``docs/evidence.schema.json``; ``SCHEMA_VERSION`` changes whenever a field changes meaning.

Nothing secret reaches it: the source is ``Source.describe()`` (credentials are refused at
parse time) and :func:`redact` removes the value of every secret-looking environment variable
from every string before anything is written or sent.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .. import __version__
from .._fmt import option_duration, redact_userinfo

__all__ = ["SCHEMA_ID", "SCHEMA_VERSION", "restore_record", "failed_record", "budget_violations",
           "document", "redact", "ci_context", "passed", "PHASE_ORDER", "drill_warnings"]

SCHEMA_ID = "urn:pytest-pgrestore:evidence:v1"  # the $id of docs/evidence.schema.json
SCHEMA_VERSION = 1
#: RTO's consecutive phases in order; ``drills`` follows the first query and is not part of RTO.
PHASE_ORDER = ("catalog", "plan", "binaries", "fetch", "verify", "prepare", "start_to_consistent",
               "consistent_to_target", "target_to_first_query")
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|ROUTING_KEY|PRIVATE|CREDENTIAL|SESSION_KEY|_KEY$|"
                          r"WEBHOOK|PGP|LIBSODIUM", re.I)
_NOT_SECRET = {"AWS_ACCESS_KEY_ID"}  # an identifier, not a secret; shown by AWS in every error anyway


def budget_violations(result, settings) -> list[str]:
    """Messages for each exceeded ``--restore-max-rto`` / ``--restore-max-rpo``, with the value."""
    out: list[str] = []
    if result is None or not getattr(result, "ok", False):
        return out
    max_rto, max_rpo = getattr(settings, "max_rto", None), getattr(settings, "max_rpo", None)
    origins = getattr(settings, "origins", {})
    if max_rto is not None and result.rto_seconds is not None and result.rto_seconds > max_rto:
        out.append(f"RTO {result.rto_seconds:.2f}s exceeds --restore-max-rto={option_duration(max_rto)} "
                   f"(from {origins.get('max_rto', 'default')}); phases: "
                   + ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items()))
    if max_rpo is not None:
        rec = result.recency or {}
        seconds = rec.get("seconds")
        where = f"--restore-max-rpo={option_duration(max_rpo)} (from {origins.get('max_rpo', 'default')})"
        if seconds is not None and seconds > max_rpo:
            out.append(f"RPO {seconds:.1f}s exceeds {where}: the newest data restored is from "
                       f"{_candidate_time(rec)} ({rec.get('used')}), the drill started {result.started_at}")
        elif seconds is None and rec.get("kind") in ("latest", "time"):
            why = f"; heartbeat query failed: {rec['heartbeat_error']}" if rec.get("heartbeat_error") else ""
            out.append(f"RPO could not be measured for {where}: no replayed commit"
                       f"{', heartbeat' if rec.get('kind') == 'latest' else ''} or segment time{why}")
    return out


def _candidate_time(rec: Mapping[str, Any]) -> str:
    used = rec.get("used")
    return str(rec.get(used) if used is not None and used in rec else rec.get("last_commit"))


def restore_record(label: str, result, settings, *, violations: list[str]) -> dict[str, Any]:
    """One restore's evidence (the drills are attached later, from their reports)."""
    r = result
    ev = r.evidence or {}
    rec = dict(r.recency or {})
    phases = [{"name": name, "seconds": r.phases[name], "in_rto": True}
              for name in _ordered(r.phases)]
    backup = ev.get("backup", {})
    target = settings.target if settings is not None else None
    cached = bool((ev.get("cache") or {}).get("served_from_cache"))
    return {
        "id": label,
        "source": r.source,
        "format": r.format,
        "target": {"text": r.target, "kind": getattr(target, "kind", None)},
        "backup": {
            "name": r.backup, "start_lsn": r.backup_start_lsn, "stop_lsn": r.backup_stop_lsn,
            "start_time": backup.get("start_time"), "stop_time": r.backup_stop_time,
            "stored_bytes": backup.get("stored_bytes"), "size_bytes": backup.get("size"),
            "bytes_fetched": r.bytes_fetched, "bytes_written": ev.get("bytes_written"),
            "pg_version": r.pg_version,
        },
        "outcome": str(r.outcome) if r.outcome else None,
        "detail": r.detail,
        "passed": bool(r.ok and not violations),
        "timeline": r.timeline,
        "replay_lsn": r.replay_lsn,
        "archive_end_lsn": r.archive_end_lsn,
        "stop_reason": r.stop_reason,
        "wal_segments": r.wal_segments,
        "started_at": r.started_at,
        "first_query_at": r.first_query_at,
        "phases": phases,
        "consistent_from": ev.get("consistent_from"),
        "rto": {
            "seconds": r.rto_seconds,
            "budget_seconds": getattr(settings, "max_rto", None),
            # a run served from --restore-cache skipped (part of) the download: not an RTO
            # measurement unless --restore-cache-counts says so
            "served_from_cache": cached,
            "counts": r.rto_seconds is not None and (not cached or bool(getattr(settings, "cache_counts", False))),
        },
        "rpo": {
            "seconds": rec.get("seconds"),
            "budget_seconds": getattr(settings, "max_rpo", None),
            "used": rec.get("used"),
            "reference": rec.get("reference"),
            "candidates": {
                "last_commit": rec.get("last_commit", r.last_replay_time),
                "heartbeat": rec.get("heartbeat"),
                "newest_segment_modified": rec.get("newest_segment_modified"),
            },
            "newest_segment": rec.get("newest_segment"),
            "heartbeat_query": rec.get("heartbeat_query"),
            "heartbeat_error": rec.get("heartbeat_error"),
            "target_gap_seconds": rec.get("target_gap_seconds"),
            "target_gap_bytes": rec.get("target_gap_bytes"),
            "clock_note": "commit and heartbeat times come from the primary's clock, segment times from "
                          "the store's; the reference is the runner's",
        },
        "wal_prefetch": r.wal_prefetch or None,
        "fetch": ev.get("fetch"),
        "cache": ev.get("cache"),
        "sharing": ev.get("sharing"),
        "versions": {**r.versions, "pytest_pgrestore": __version__},
        "runtime": ev.get("runtime"),
        "preload": ev.get("preload"),
        "drill_role": ev.get("drill_role"),
        "drill_superuser": ev.get("drill_superuser"),
        "contents_verified": ev.get("contents_verified"),
        "contents_check": ev.get("contents_check"),
        "warnings": drill_warnings(ev, settings),
        "attempts": [{"backup": a.backup, "outcome": str(a.outcome), "detail": a.detail} for a in r.attempts],
        "violations": list(violations),
        "drills": [],
    }


def drill_warnings(ev: Mapping[str, Any], settings) -> list[str]:
    """Plain sentences: the backup's contents could not be verified; the drills ran as a superuser."""
    out = []
    if ev.get("contents_verified") is False:
        hint = "" if "corruption" in (getattr(settings, "checks", None) or ()) else \
            " (--restore-checks=corruption reads every page with amcheck and the page checksums)"
        out.append(f"contents not verifiable: {ev.get('contents_check') or 'the backup carries no checksums'}{hint}")
    if not ev.get("drill_superuser"):
        return out
    origin = getattr(settings, "origins", {}).get("user", "default")
    return out + [f"drills ran as {ev.get('drill_role')}, a SUPERUSER (--restore-user from {origin}): a drill could "
            "run programs and read files on the runner as the server's OS user; leave --restore-user unset to "
            "drill as the non-superuser drill role"]


def failed_record(label: str, source: str | None, target: str, message: str) -> dict[str, Any]:
    """A restore that failed before any evidence existed (no source, an unreadable store)."""
    return {"id": label, "source": source, "format": None, "target": {"text": target, "kind": None},
            "outcome": None, "detail": message, "passed": False, "phases": [], "violations": [],
            "rto": {"seconds": None, "budget_seconds": None, "served_from_cache": False, "counts": False},
            "rpo": {"seconds": None, "used": None, "candidates": {}}, "drills": []}


def _ordered(phases: Mapping[str, float]) -> list[str]:
    known = [p for p in PHASE_ORDER if p in phases]
    return known + [p for p in phases if p not in known]


def passed(record: Mapping[str, Any]) -> bool:
    """A restore counts as proven when it was REACHED, within budget, and every drill passed."""
    return bool(record.get("passed")) and all(d.get("outcome") == "passed" for d in record.get("drills", []))


def document(restores: Iterable[dict[str, Any]], *, started_at: str, exit_status: int,
             env: Mapping[str, str], runbook_url: str | None = None) -> dict[str, Any]:
    restores = list(restores)
    for rec in restores:
        rec["passed"] = passed(rec)
    return redact({
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "pytest-pgrestore", "version": __version__, "python": platform.python_version(),
                 "pytest": _pytest_version()},
        "run": {
            "started_at": started_at,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "exit_status": int(exit_status),
            "passed": int(exit_status) == 0 and bool(restores) and all(r["passed"] for r in restores),
            "host": socket.gethostname(),
            "ci": ci_context(env),
            "runbook_url": runbook_url,
        },
        "restores": restores,
    }, env)


def _pytest_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distribution's version: the record is built without importing pytest
        return version("pytest")
    except PackageNotFoundError:  # pragma: no cover
        return None


def ci_context(env: Mapping[str, str]) -> dict[str, Any] | None:
    """Where the run happened, so the evidence links back to its job."""
    if env.get("GITHUB_ACTIONS") == "true":
        server, repo, run = env.get("GITHUB_SERVER_URL", ""), env.get("GITHUB_REPOSITORY", ""), env.get("GITHUB_RUN_ID")
        return {"provider": "github", "run_url": f"{server}/{repo}/actions/runs/{run}" if run else None,
                "ref": env.get("GITHUB_REF_NAME"), "sha": env.get("GITHUB_SHA"), "event": env.get("GITHUB_EVENT_NAME"),
                "job": env.get("GITHUB_JOB")}
    if env.get("GITLAB_CI") == "true":
        return {"provider": "gitlab", "run_url": env.get("CI_JOB_URL"), "ref": env.get("CI_COMMIT_REF_NAME"),
                "sha": env.get("CI_COMMIT_SHA"), "event": env.get("CI_PIPELINE_SOURCE"), "job": env.get("CI_JOB_NAME")}
    return None


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables that look like secrets (long enough to be worth hiding)."""
    found = {v for k, v in env.items() if _SECRET_NAME.search(k) and k not in _NOT_SECRET and len(v) >= 6}
    return sorted(found, key=len, reverse=True)


def redact(obj: Any, env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> Any:
    """``obj`` with every secret value replaced by ``<redacted>`` in every string."""
    secrets = secret_values(env if env is not None else os.environ) + [s for s in extra if s and len(s) >= 6]

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            value = redact_userinfo(value)  # a password in any URL: the endpoint's, a runbook's
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, "<redacted>")
            return value
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value

    return walk(obj)
