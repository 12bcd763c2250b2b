"""The freshness gate: did a drill of this source pass within N days?

Reads evidence records (``--restore-report`` files) from a directory — where CI unpacked the
drill job's artifact — or from an evidence bucket, and answers from them alone: the newest
record of the source (per target kind, when kinds are asked for) decides, and it must have
passed (REACHED, every drill passed, budgets met, pytest exit 0), be young enough, and meet any
RTO/RPO budget the gate adds.  Pure apart from :func:`load`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._fmt import option_duration
from ..errors import UsageError
from ..settings._options import SourceIdentity, parse_source, source_identity
from ._record import SCHEMA_VERSION, passed

__all__ = ["Evidence", "GateResult", "load", "decide", "evidence_location"]


@dataclass
class Evidence:
    where: str  # file path or object key, for the reason text
    doc: dict[str, Any]

    @property
    def finished(self) -> datetime:
        return _time(self.doc["run"]["finished_at"])


@dataclass
class GateResult:
    ok: bool
    reasons: list[str] = field(default_factory=list)  # one line per target kind checked
    records: list[dict[str, Any]] = field(default_factory=list)  # the deciding records

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "reasons": self.reasons, "records": self.records}


def evidence_location(text: str, *, source: str | None, origin: str = "--evidence"):
    """Parse ``--evidence`` (a directory, file:// or s3:// URL); an evidence bucket must not be
    the backup source's bucket: the drill job would need write access to the backups."""
    raw = text.strip()
    if "://" not in raw and not raw.startswith("/"):
        raw = str(Path(raw).absolute())
    where = parse_source(raw, origin=origin)
    if where.scheme == "s3" and source:
        src = parse_source(source, origin="--source")
        if src.scheme == "s3" and src.bucket == where.bucket:
            raise UsageError(f"the evidence bucket {where.bucket!r} is the backup source's bucket (from {origin})",
                             checked=f"--source {src.describe()} and {origin} {where.describe()}",
                             fix="keep evidence in a bucket of its own: whoever writes evidence must never "
                                 "hold write access to the backups")
    return where


def load(where, *, env: Mapping[str, str] | None = None) -> tuple[list[Evidence], list[str]]:
    """Every evidence record under ``where`` (recursive ``*.json``) and the problems met."""
    from ..store import open_store

    docs, problems = [], []
    if where.scheme == "file" and not where.path.is_dir():
        return [], [f"{where.path} is not a directory"]
    store = open_store(where, env=dict(env if env is not None else os.environ))
    try:
        for info in store.list(""):
            if not info.key.endswith(".json"):
                continue
            try:
                with store.open(info.key) as f:
                    doc = json.loads(f.read(16 << 20))
            except (OSError, ValueError) as exc:
                problems.append(f"{info.key}: unreadable ({type(exc).__name__})")
                continue
            if not (isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION and "restores" in doc):
                continue  # some other JSON file in the artifact
            docs.append(Evidence(info.key, doc))
    finally:
        store.close()
    return docs, problems


def decide(docs: Iterable[Evidence], *, source: str, max_age: float, now: datetime | None = None,
           target_kinds: Iterable[str] = (), max_rto: float | None = None,
           max_rpo: float | None = None) -> GateResult:
    now = now or datetime.now(timezone.utc)
    want = source_identity(source, origin="--source")
    found: list[tuple[Evidence, dict[str, Any]]] = []
    sources = set()
    selectors: set[str] = set()  # of the asked base, when the asked source names none
    for ev in docs:
        for rec in ev.doc.get("restores", []):
            sources.add(str(rec.get("source")))
            have = _identity(rec.get("source"))
            if have is not None and (have == want or (not want.selector and have.base == want.base)):
                found.append((ev, rec))
                if have.selector:
                    selectors.add(have.selector)
    if len(selectors) > 1:  # several stanzas (servers) of the one repository: which one is meant?
        named = sorted(f"{want.base}?{sel}" for sel in selectors)
        keys = {sel.partition("=")[0] for sel in selectors}
        raise UsageError(f"--source {want.text} is ambiguous: the evidence holds drills of several "
                         f"{'/'.join(sorted(keys))}s of it: " + ", ".join(named),
                         checked="the evidence records' sources",
                         fix=f"name one, e.g. --source {named[0]}")
    if selectors:  # the drill resolved the only stanza (server): name it
        want = SourceIdentity(want.base, selectors.pop())
    if not found:
        seen = ", ".join(sorted(sources)) or "none"
        return GateResult(False, [f"no drill evidence for {want} (sources in the evidence: {seen})"])
    result = GateResult(True)
    kinds: list[str | None] = [*target_kinds] or [None]  # None: any kind
    for kind in kinds:
        matching = [(ev, rec) for ev, rec in found if kind is None or (rec.get("target") or {}).get("kind") == kind]
        what = f"{want}" + (f" (target kind {kind})" if kind else "")
        if not matching:
            result.ok = False
            result.reasons.append(f"no drill of {what} in the evidence")
            continue
        ev, rec = max(matching, key=lambda pair: pair[0].finished)
        ok, reason = _judge(ev, rec, what, now=now, max_age=max_age, max_rto=max_rto, max_rpo=max_rpo)
        result.ok &= ok
        result.reasons.append(reason)
        result.records.append({"where": ev.where, "finished_at": ev.doc["run"]["finished_at"], **_brief(rec)})
    return result


def _identity(text: Any) -> SourceIdentity | None:
    """A record's source identity; None when it has none (a run that failed before it had a source)."""
    if not isinstance(text, str):
        return None
    try:
        return source_identity(text, origin="the evidence record")
    except UsageError:
        return None


def _judge(ev: Evidence, rec: Mapping[str, Any], what: str, *, now: datetime, max_age: float,
           max_rto: float | None, max_rpo: float | None) -> tuple[bool, str]:
    age = (now - ev.finished).total_seconds()
    when = f"{option_duration(max(int(age), 0))} ago ({ev.doc['run']['finished_at']}, {ev.where})"
    run_url = (ev.doc["run"].get("ci") or {}).get("run_url")
    when += f", {run_url}" if run_url else ""
    if not passed(rec) or ev.doc["run"].get("exit_status") != 0:
        bad = [d["nodeid"] for d in rec.get("drills", []) if d.get("outcome") != "passed"]
        why = (rec.get("violations") or [None])[0] or (f"drills not passed: {', '.join(bad)}" if bad else None) \
            or f"{rec.get('outcome') or 'FAILED'}: {(rec.get('detail') or '').splitlines()[0] if rec.get('detail') else ''}"
        if passed(rec):  # the restore and its drills passed, something else in the run did not
            why = f"the drill run exited {ev.doc['run'].get('exit_status')}"
        return False, f"FAIL: the newest drill of {what} failed {when}: {why}"
    if age > max_age:
        return False, (f"FAIL: the newest drill of {what} passed {when}, older than --max-age "
                       f"{option_duration(max_age)}")
    rto, rpo = rec["rto"].get("seconds"), rec["rpo"].get("seconds")
    if max_rto is not None and (rto is None or rto > max_rto or rec["rto"].get("served_from_cache")):
        shown = "not measured" if rto is None or rec["rto"].get("served_from_cache") else f"{rto:.1f}s"
        return False, f"FAIL: the newest drill of {what} has RTO {shown}, over --max-rto {option_duration(max_rto)}"
    if max_rpo is not None and (rpo is None or rpo > max_rpo):
        shown = "not measured" if rpo is None else f"{rpo:.1f}s"
        return False, f"FAIL: the newest drill of {what} has RPO {shown}, over --max-rpo {option_duration(max_rpo)}"
    return True, (f"PASS: a drill of {what} passed {when}: {rec.get('outcome')}, backup "
                  f"{(rec.get('backup') or {}).get('name')}, RTO {_num(rto)}, RPO {_num(rpo)}")


def _num(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _brief(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": rec.get("id"), "target": rec.get("target"), "outcome": rec.get("outcome"),
            "passed": passed(rec), "rto_seconds": rec["rto"].get("seconds"), "rpo_seconds": rec["rpo"].get("seconds")}


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
