"""The evidence record rendered for each reader: terminal, pytest-html, JUnit properties,
GitHub's step summary (Markdown) and node_exporter's textfile collector (pure string building).

Every function takes records as built by :mod:`pytest_pgrestore.evidence._record` (already redacted).
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._fmt import human_bytes

__all__ = ["terminal_lines", "markdown", "html_section", "junit_properties", "prometheus", "write_atomic",
           "phase_text"]

_LABELS = {"start_to_consistent": "start→consistent", "consistent_to_target": "consistent→target",
           "target_to_first_query": "target→first query"}


def _s(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}s"


def phase_text(rec: Mapping[str, Any]) -> str:
    return ", ".join(f"{_LABELS.get(p['name'], p['name'])} {p['seconds']:.2f}s" for p in rec.get("phases", []))


def _rpo_text(rec: Mapping[str, Any]) -> str:
    rpo = rec.get("rpo") or {}
    if rpo.get("seconds") is None:
        return "RPO -"
    return f"RPO {rpo['seconds']:.1f}s (from {rpo.get('used')})"


def _prefetch_text(rec: Mapping[str, Any]) -> str:
    w = rec.get("wal_prefetch") or {}
    if not w:
        return ""
    return (f"WAL prefetch {human_bytes(w.get('bytes'), largest='GiB')} in {w.get('segments')} segment(s), busy "
            f"{_s(w.get('busy_seconds'))}, replay waited {_s(w.get('replay_waited_seconds'))}")


def _drills_text(rec: Mapping[str, Any]) -> str:
    drills = rec.get("drills", [])
    bad = sum(1 for d in drills if d["outcome"] != "passed")
    return f"{len(drills)} drill(s)" + (f", {bad} not passed" if bad else "")


def terminal_lines(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """``(line, ok)`` pairs for the "restore evidence" section."""
    out = []
    for rec in records:
        ok = bool(rec.get("passed"))
        head = f"{rec['id']} {rec.get('outcome') or 'FAILED'}"
        if rec.get("rto", {}).get("seconds") is None:
            out.append((f"{head}: {(rec.get('detail') or '').splitlines()[0] if rec.get('detail') else ''}", ok))
        else:
            out.append((f"{head}: RTO {_s(rec['rto']['seconds'])}, {_rpo_text(rec)}; {_drills_text(rec)}", ok))
            out.append((f"  phases: {phase_text(rec)}", ok))
            if rec.get("wal_prefetch"):
                out.append((f"  {_prefetch_text(rec)}", ok))
        for v in rec.get("violations", []):
            out.append((f"  BUDGET: {v.splitlines()[0]}", False))
        for w in rec.get("warnings") or []:
            out.append((f"  WARNING: {w}", False))
        if rec.get("rpo", {}).get("heartbeat_error"):
            out.append((f"  heartbeat query failed: {rec['rpo']['heartbeat_error']}", False))
    return out


def markdown(doc: Mapping[str, Any]) -> str:
    """A GitHub job-summary table of the run."""
    run = doc["run"]
    lines = [f"## Restore drill: {'passed' if run['passed'] else 'FAILED'} (pytest exit {run['exit_status']})", "",
             "| restore | source | backup | outcome | RTO | RPO | drills |",
             "|---|---|---|---|---|---|---|"]
    for rec in doc["restores"]:
        backup = (rec.get("backup") or {}).get("name") or "-"
        lines.append(f"| `{_md(rec['id'])}` | `{_md(rec.get('source') or '-')}` | {_md(backup)} | "
                     f"{'✅' if rec['passed'] else '❌'} {rec.get('outcome') or 'FAILED'} | "
                     f"{_s(rec['rto']['seconds'])} | {_md(_rpo_text(rec)[4:])} | {_md(_drills_text(rec))} |")
    for rec in doc["restores"]:
        if rec.get("phases"):
            lines += ["", f"**{_md(rec['id'])}** phases: {_md(phase_text(rec))}"]
        if not rec["passed"]:
            reasons = rec.get("violations") or [(rec.get("detail") or "").splitlines()[0] if rec.get("detail") else ""]
            reasons += [f"{d['nodeid']}: {d.get('message') or d['outcome']}" for d in rec.get("drills", [])
                        if d["outcome"] != "passed"]
            lines += [f"- {_md(r[:300])}" for r in reasons if r]
        lines += [f"- ⚠️ {_md(w)}" for w in rec.get("warnings") or []]
    if run.get("runbook_url"):
        lines += ["", f"Runbook: {run['runbook_url']}"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def html_section(doc: Mapping[str, Any]) -> str:
    """The pytest-html "Restore drills" section (pytest-html inserts it unescaped: escape here)."""
    e = html.escape
    parts = ['<div class="pgrestore-evidence" style="margin:1em 0">', "<h2>Restore drills</h2>"]
    for rec in doc["restores"]:
        b = rec.get("backup") or {}
        color = "#2e7d32" if rec["passed"] else "#c62828"
        rows = [("backup", f"{b.get('name') or '-'} (stop LSN {b.get('stop_lsn') or '-'}, "
                           f"stopped {b.get('stop_time') or '-'}, fetched {human_bytes(b.get('bytes_fetched'), largest='GiB')})"),
                ("source", rec.get("source") or "-"),
                ("target", rec["target"]["text"]),
                ("outcome", f"{rec.get('outcome') or 'FAILED'}: {rec.get('detail') or ''}"),
                ("timeline / replay LSN", f"{rec.get('timeline')} / {rec.get('replay_lsn')}"),
                ("RTO", _s(rec["rto"]["seconds"]) + (f" (budget {_s(rec['rto']['budget_seconds'], 0)})"
                                                     if rec["rto"].get("budget_seconds") else "")),
                ("RPO", _rpo_text(rec)[4:]),
                ("WAL prefetch", _prefetch_text(rec) or "-"),
                ("drills", _drills_text(rec))]
        rows += [("budget exceeded", v) for v in rec.get("violations", [])]
        if rec.get("drill_role"):
            rows.append(("drills ran as", f"{rec['drill_role']}{' (SUPERUSER)' if rec.get('drill_superuser') else ''}"))
        rows += [("warning", w) for w in rec.get("warnings") or []]
        parts.append(f'<h3 style="color:{color}">{e(rec["id"])}: {e(rec.get("outcome") or "FAILED")}</h3>')
        parts.append('<table class="pgrestore-restore" style="border-collapse:collapse;color:#222">')
        parts += [f'<tr><th style="text-align:left;padding-right:1em">{e(k)}</th><td>{e(str(v))}</td></tr>'
                  for k, v in rows]
        parts.append("</table>")
        if rec.get("phases"):
            parts.append('<table class="pgrestore-phases" style="border-collapse:collapse;margin-top:.5em;color:#222">'
                         "<tr><th style=\"text-align:left;padding-right:1em\">phase</th><th>seconds</th></tr>")
            parts += [f'<tr><td style="padding-right:1em">{e(_LABELS.get(p["name"], p["name"]))}'
                      f'{"" if p.get("in_rto", True) else " (after RTO)"}</td>'
                      f'<td style="text-align:right">{p["seconds"]:.3f}</td></tr>' for p in rec["phases"]]
            parts.append(f'<tr><th style="text-align:left">RTO (first query − start)</th>'
                         f'<th style="text-align:right">{rec["rto"]["seconds"]:.3f}</th></tr></table>'
                         if rec["rto"]["seconds"] is not None else "</table>")
    parts.append("</div>")
    return "\n".join(parts)


def junit_properties(rec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Properties on the restore item's ``<testcase>`` (carried by the report, so xdist keeps them)."""
    props = [("restore_rto_seconds", rec["rto"]["seconds"]), ("restore_rpo_seconds", rec["rpo"]["seconds"]),
             ("restore_rpo_used", rec["rpo"].get("used")), ("restore_started_at", rec.get("started_at")),
             ("restore_first_query_at", rec.get("first_query_at")), ("restore_passed", rec["passed"])]
    props += [(f"restore_phase_{p['name']}_seconds", p["seconds"]) for p in rec.get("phases", [])]
    w = rec.get("wal_prefetch") or {}
    props += [(f"restore_wal_prefetch_{k}", w[k]) for k in ("bytes", "busy_seconds", "replay_waited_seconds")
              if k in w]
    props += [("restore_budget_exceeded", v.splitlines()[0]) for v in rec.get("violations", [])]
    if rec.get("drill_role"):
        props += [("restore_drill_role", rec["drill_role"]), ("restore_drill_superuser", rec.get("drill_superuser"))]
    return [(k, "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in props]


def prometheus(doc: Mapping[str, Any]) -> str:
    """A textfile for node_exporter's textfile collector: the last drill per source/target."""
    metrics = {
        "pgrestore_drill_success": ("1 when the last restore drill of this source/target passed", "passed"),
        "pgrestore_drill_last_run_timestamp_seconds": ("when the last restore drill finished (unix time)", "time"),
        "pgrestore_drill_rto_seconds": ("measured RTO of the last restore drill", "rto"),
        "pgrestore_drill_rpo_seconds": ("measured data recency (RPO) of the last restore drill", "rpo"),
    }
    from datetime import datetime

    finished = datetime.fromisoformat(doc["run"]["finished_at"]).timestamp()
    lines = []
    for name, (help_text, what) in metrics.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for rec in doc["restores"]:
            value = {"passed": 1 if rec["passed"] else 0, "time": finished, "rto": rec["rto"]["seconds"],
                     "rpo": rec["rpo"]["seconds"]}[what]
            if value is None:
                continue
            labels = (f'source="{_label(rec.get("source") or "")}",target="{_label(rec["target"]["text"])}",'
                      f'outcome="{_label(rec.get("outcome") or "FAILED")}"')
            lines.append(f"{name}{{{labels}}} {value}")
    return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so readers (node_exporter, a gate) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
