"""Tell someone when a drill fails: a PagerDuty Events API v2 event or a generic JSON webhook.

The payload carries the failure summary, the CI job's link and the runbook link; it is built
from the (already redacted) evidence record and redacted again, so no credential of the run —
AWS keys, the per-run password, the webhook's own URL — can travel with it.  Sending never
raises: a failed alert becomes a warning and is recorded in the evidence.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from ._record import redact

log = logging.getLogger(__name__)

__all__ = ["should_alert", "webhook_payload", "pagerduty_event", "send_alerts"]

TIMEOUT = 10.0


def should_alert(doc: Mapping[str, Any]) -> bool:
    return not doc["run"]["passed"]


def _failures(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for rec in doc["restores"]:
        if rec["passed"]:
            continue
        detail = (rec.get("detail") or "").splitlines()[0][:300] if rec.get("detail") else ""
        out.append({
            "restore": rec["id"], "source": rec.get("source"), "target": rec["target"]["text"],
            "outcome": rec.get("outcome") or "FAILED", "detail": detail,
            "rto_seconds": rec["rto"]["seconds"], "rpo_seconds": rec["rpo"]["seconds"],
            "budget_exceeded": [v.splitlines()[0] for v in rec.get("violations", [])],
            "failed_drills": [{"test": d["nodeid"], "outcome": d["outcome"], "message": (d.get("message") or "")[:200]}
                              for d in rec.get("drills", []) if d["outcome"] != "passed"],
        })
    return out


def summary(doc: Mapping[str, Any]) -> str:
    fails = _failures(doc)
    if not fails:
        return f"restore drill failed: pytest exit status {doc['run']['exit_status']}, no restore proven"
    first = fails[0]
    why = first["budget_exceeded"][0] if first["budget_exceeded"] else first["detail"] or (
        f"{len(first['failed_drills'])} drill(s) failed" if first["failed_drills"] else "")
    more = f" (+{len(fails) - 1} more)" if len(fails) > 1 else ""
    return f"restore drill failed: {first['source']} {first['restore']} {first['outcome']}: {why}{more}"[:1000]


def webhook_payload(doc: Mapping[str, Any]) -> dict[str, Any]:
    run = doc["run"]
    return {"event": "pgrestore.drill_failed", "summary": summary(doc), "exit_status": run["exit_status"],
            "finished_at": run["finished_at"], "host": run["host"],
            "run_url": (run.get("ci") or {}).get("run_url"), "runbook_url": run.get("runbook_url"),
            "failures": _failures(doc), "tool": doc["tool"]}


def pagerduty_event(doc: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    run = doc["run"]
    fails = _failures(doc)
    component = fails[0]["source"] if fails else None
    links = [{"href": u, "text": t} for u, t in (((run.get("ci") or {}).get("run_url"), "drill job"),
                                                  (run.get("runbook_url"), "runbook")) if u]
    return {
        "routing_key": routing_key,  # the integration's key: PagerDuty needs it in the body
        "event_action": "trigger",
        "dedup_key": f"pgrestore:{component or run['host']}"[:255],
        "payload": {"summary": summary(doc)[:1024], "source": f"pytest-pgrestore on {run['host']}",
                    "severity": "critical", "component": component, "group": "restore-drill",
                    "class": fails[0]["outcome"] if fails else "NO_DRILL",
                    "custom_details": {"failures": fails, "exit_status": run["exit_status"]}},
        "links": links,
    }


def _post(url: str, body: dict[str, Any]) -> str:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "pytest-pgrestore"})
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 — http(s) only, checked in config
        return str(resp.status)


def send_alerts(doc: Mapping[str, Any], settings, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Send what is configured when the run failed; return what happened (for the evidence)."""
    from ..settings._options import PAGERDUTY_KEY_VAR

    sent: list[dict[str, Any]] = []
    if not should_alert(doc):
        return sent
    hide = [settings.alert_webhook or ""]
    targets = []
    if settings.alert_webhook:
        targets.append(("webhook", settings.alert_webhook, redact(webhook_payload(doc), env, hide)))
    if settings.alert_pagerduty:
        key = env.get(PAGERDUTY_KEY_VAR, "")
        event = redact(pagerduty_event(doc, "\0"), env, hide)
        event["routing_key"] = key
        targets.append(("pagerduty", settings.alert_pagerduty, event))
    for kind, url, body in targets:
        try:
            status = _post(url, body)
            sent.append({"kind": kind, "status": status})
        except (OSError, urllib.error.URLError, ValueError) as exc:
            # the URL may hold a token: name the kind, never the address
            why = getattr(exc, "code", None) or type(exc).__name__
            log.warning("pgrestore: sending the %s alert failed: %s", kind, why)
            sent.append({"kind": kind, "status": "failed", "error": str(why)})
    return sent
