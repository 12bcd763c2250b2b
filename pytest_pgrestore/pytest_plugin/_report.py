"""pytest hooks that turn the run's restores into evidence: budgets, JSON record, pytest-html
section, terminal summary, JUnit properties, GitHub step summary, metrics and alerts.

Registered by ``plugin.pytest_configure``.  Everything travels on test reports: the restore
item's call report carries its evidence record, each drill's reports carry which restore they
used.  Reports are what pytest-xdist ships from workers to the controller, so the controller
(the only process that writes anything) sees the same data with or without xdist.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from typing import Any

import pytest

from ..errors import UsageError
from ..evidence import _record as evidence
from ..evidence import _report as report
from ..restore._manager import key_for
from ..settings._options import PAGERDUTY_KEY_VAR
from ._items import _MANAGER, _SETTINGS, RESTORE_FIXTURES, RestoreItem, settings_for

log = logging.getLogger(__name__)

_RECORD = "pgrestore_evidence"  # on a restore item's call report: {"ref", "record"}
_DRILL_OF = "pgrestore_drill_of"  # on a drill's reports: the ref of the restore it used
_USAGE = "pgrestore_usage_error"  # on the report of a restore that failed with a usage error


def _ref(key) -> str:
    return f"{key.source}|{key.target}|{key.format}"


class EvidencePlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = config.stash[_SETTINGS]
        self.env = dict(os.environ)
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self.records: dict[str, dict[str, Any]] = {}
        self.drills: dict[str, dict[str, dict[str, Any]]] = {}
        self.doc: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.usage_errors: list[str] = []  # node ids of restores refused as usage errors
        if self.settings.alert_pagerduty and not self.env.get(PAGERDUTY_KEY_VAR):
            raise pytest.UsageError(
                f"--restore-alert-pagerduty (from {self.settings.origins.get('alert_pagerduty')}) needs the "
                f"routing key in env {PAGERDUTY_KEY_VAR}\n  fix: export {PAGERDUTY_KEY_VAR} from a CI secret "
                "(it is never read from the command line or an ini file)")

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    # -- on the process that runs the test (an xdist worker or the only process) -------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        outcome = yield
        rep = outcome.get_result()
        if rep.when == "call" and _usage_error(item, call):
            setattr(rep, _USAGE, True)
        if isinstance(item, RestoreItem):  # negative_control[...] and plan[...] items prove something else
            if rep.when == "call" and item.name.startswith("restore["):
                self._restore_report(item, rep)
        elif RESTORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            setattr(rep, _DRILL_OF, _ref(key_for(settings_for(item))))

    def _restore_report(self, item: RestoreItem, rep) -> None:
        manager = self.config.stash[_MANAGER]
        key = key_for(item.settings)
        result = manager.results.get(key)
        if result is None:
            failure = manager.failure(item.settings)
            text = str(failure) if failure else (rep.longreprtext or "restore did not run")
            record = evidence.failed_record(key.label, key.source if item.settings.source else None,
                                            key.target, (text.splitlines() or [""])[0])
        else:
            violations = evidence.budget_violations(result, item.settings)
            record = evidence.restore_record(key.label, result, item.settings, violations=violations)
            if violations and rep.passed:
                rep.outcome = "failed"
                rep.longrepr = "\n".join(f"{key.label}: {v}" for v in violations)
        record = evidence.redact(record, item.settings.env)
        item.user_properties.extend(report.junit_properties(record))  # junitxml reads them at teardown
        setattr(rep, _RECORD, {"ref": _ref(key), "record": record})

    # -- on the controller (xdist) or the only process ----------------------------------------
    def pytest_runtest_logreport(self, report) -> None:
        if getattr(report, _USAGE, False):
            self.usage_errors.append(report.nodeid)
        ev = getattr(report, _RECORD, None)
        if ev:
            self.records[ev["ref"]] = ev["record"]
        ref = getattr(report, _DRILL_OF, None)
        if ref:
            self._drill(ref, report)

    def _drill(self, ref: str, rep) -> None:
        drill = self.drills.setdefault(ref, {}).setdefault(
            rep.nodeid, {"nodeid": rep.nodeid, "outcome": "passed", "duration": 0.0, "message": None})
        drill["duration"] = round(drill["duration"] + (rep.duration or 0.0), 3)
        drill["stop"] = max(drill.get("stop", 0.0), getattr(rep, "stop", 0.0) or 0.0)
        if rep.failed or rep.skipped:
            if drill["outcome"] == "passed":
                drill["outcome"] = "skipped" if rep.skipped else ("failed" if rep.when == "call" else "error")
                text = rep.longreprtext or ""
                drill["message"] = _first_line(text)
        if getattr(rep, "worker_id", None):
            drill["worker"] = rep.worker_id

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self.is_worker:
            return
        status = int(session.exitstatus)
        if status == pytest.ExitCode.NO_TESTS_COLLECTED and self.settings.source is not None:
            session.exitstatus = status = int(pytest.ExitCode.TESTS_FAILED)
            self.notes.append(f"no drill ran although a backup source is configured (from "
                              f"{self.settings.origins.get('source')}): nothing was proven, so pytest's exit "
                              "status 5 (no tests collected) is turned into 1")
        if status == pytest.ExitCode.TESTS_FAILED and self.usage_errors:
            session.exitstatus = status = int(pytest.ExitCode.USAGE_ERROR)
            shown = ", ".join(nodeid.rpartition("::")[2] for nodeid in self.usage_errors)
            self.notes.append(f"{shown} failed on a value the user controls (a malformed target, option or "
                              "source): the exit status is 4 (usage error), as when pytest refuses an option")
        if not self.records and not self._wants_output():
            return
        self.doc = self._document(status)
        self._write_outputs(self.doc)

    def _wants_output(self) -> bool:
        s = self.settings
        return bool(s.report or s.metrics or s.alert_webhook or s.alert_pagerduty) and s.source is not None

    def _document(self, status: int) -> dict[str, Any]:
        from ._xdist_share import sharing_for

        restores = []
        shared = sharing_for(self.config)  # under xdist: how many restores the workers really made
        for ref, record in self.records.items():
            record = dict(record)
            if ref in shared:
                record["sharing"] = {**(record.get("sharing") or {}), **shared[ref]}
            drills = sorted(self.drills.get(ref, {}).values(), key=lambda d: d.get("stop", 0.0))
            record["drills"] = [{k: v for k, v in d.items() if k != "stop"} for d in drills]
            first = record.get("first_query_at")
            if drills and first:
                end = max(d.get("stop", 0.0) for d in drills)
                seconds = end - datetime.fromisoformat(first).timestamp()
                if seconds >= 0:
                    record["phases"] = [*record["phases"], {"name": "drills", "seconds": round(seconds, 3),
                                                            "in_rto": False}]
            restores.append(record)
        return evidence.document(restores, started_at=self.started_at, exit_status=status, env=self.env,
                                 runbook_url=self.settings.runbook_url)

    def _write_outputs(self, doc: dict[str, Any]) -> None:
        from ..evidence import _alert as alert

        s = self.settings
        if s.alert_webhook or s.alert_pagerduty:
            doc["run"]["alerts"] = alert.send_alerts(doc, s, self.env)
            for a in doc["run"]["alerts"]:
                if a["status"] == "failed":
                    self.notes.append(f"sending the {a['kind']} alert failed: {a['error']}")
        if s.report:
            import json

            report.write_atomic(s.report, json.dumps(doc, indent=2) + "\n")
        if s.metrics:
            report.write_atomic(s.metrics, report.prometheus(doc))
        summary = self.env.get("GITHUB_STEP_SUMMARY")
        if summary and doc["restores"]:
            try:
                with open(summary, "a") as f:
                    f.write(report.markdown(doc))
            except OSError as exc:
                self.notes.append(f"cannot append to $GITHUB_STEP_SUMMARY: {exc}")

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.doc and self.doc["restores"]:
            tr.section("restore evidence")
            for line, ok in report.terminal_lines(self.doc["restores"]):
                tr.write_line(line, green=ok, red=not ok)
            if self.settings.report:
                tr.write_line(f"evidence record: {self.settings.report}")
            if self.settings.metrics:
                tr.write_line(f"metrics textfile: {self.settings.metrics}")
        for note in self.notes:
            tr.write_line(f"pgrestore: {note}", red=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix, summary, postfix, session) -> None:
        if self.doc and self.doc["restores"]:
            prefix.append(report.html_section(self.doc))


def _usage_error(item: pytest.Item, call) -> bool:
    """The restore of this item (or of its ``restore_factory``) failed with a usage error: known only
    once it ran, as a bare backup name is a malformed target when the listing holds no such backup."""
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(item, RestoreItem):
        return isinstance(exc, UsageError)
    # restore_factory turns a usage error into pytest's own
    return isinstance(exc, pytest.UsageError) and "restore_factory" in getattr(item, "fixturenames", ())


def _first_line(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("E "):
            return line[2:].strip()[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


def register(config: pytest.Config) -> None:
    if config.stash.get(_SETTINGS, None) is not None:
        config.pluginmanager.register(EvidencePlugin(config), "pgrestore-evidence")
