"""RTO/RPO measurement, budgets, the evidence record and its renderings (pure logic).

The end-to-end runs that produce real records are in tests/plugin/test_evidence_run.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from pytest_pgrestore.evidence import _record as evidence
from pytest_pgrestore.evidence import _report as report
from pytest_pgrestore.evidence._alert import pagerduty_event, webhook_payload
from pytest_pgrestore.restore._measure import consistent_at, recency
from pytest_pgrestore.restore._restorer import _Phases
from pytest_pgrestore.restore._result import Outcome, RestoreResult
from pytest_pgrestore.settings._options import resolve_settings
from pytest_pgrestore.settings._target import RestoreTarget

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "evidence.schema.json").read_text())
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def reached(**changes) -> RestoreResult:
    r = RestoreResult(source="s3://backups/pg/main", format="walg", target="latest", backup="base_0001",
                      outcome=Outcome.REACHED, detail="replayed to 0/5000000", backup_start_lsn="0/2000028",
                      backup_stop_lsn="0/2000100", backup_stop_time=iso(T0 - timedelta(hours=2)), timeline=1,
                      replay_lsn="0/5000000", last_replay_time=iso(T0 - timedelta(minutes=30)),
                      phases={"catalog": 0.1, "plan": 0.0, "fetch": 2.0, "start_to_consistent": 0.5,
                              "consistent_to_target": 1.0, "target_to_first_query": 0.1},
                      started_at=iso(T0), first_query_at=iso(T0 + timedelta(seconds=3.7)), rto_seconds=3.7)
    for k, v in changes.items():
        setattr(r, k, v)
    return r


def settings(**cli):
    return resolve_settings(cli={"source": "s3://backups/pg/main", **cli}, env={}, ini={})


# -- the phase clock ------------------------------------------------------------------------------
def test_phases_are_consecutive_and_add_up_to_the_rto(tmp_path):
    result = RestoreResult(source="x", format="basebackup", target="latest")
    clock = _Phases(result)
    with clock("catalog"):
        time.sleep(0.02)
    time.sleep(0.03)  # untimed work between phases belongs to the next phase, never lost
    with clock("fetch"):
        time.sleep(0.02)
    log = tmp_path / "postgres.log"
    with clock("recover", log_file=log):
        time.sleep(0.05)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        log.write_text(f"{stamp} UTC [42] LOG:  consistent recovery state reached at 0/2000100\n")
        time.sleep(0.05)
    with clock("relist"):
        time.sleep(0.01)
    clock.first_query()
    assert list(result.phases) == ["catalog", "fetch", "start_to_consistent", "consistent_to_target",
                                   "target_to_first_query"]
    assert result.phases["fetch"] >= 0.05  # the gap before it is counted
    assert 0.03 <= result.phases["start_to_consistent"] <= 0.09
    assert 0.03 <= result.phases["consistent_to_target"] <= 0.09
    assert abs(sum(result.phases.values()) - result.rto_seconds) < 0.005
    assert result.evidence["consistent_from"] == "server log"
    assert result.first_query_at > result.started_at


def test_consistent_moment_missing_from_the_log_counts_all_as_start_to_consistent(tmp_path):
    at, how = consistent_at(tmp_path / "absent.log", start=10.0, end=12.0, wall0=0.0, t0=0.0)
    assert at == 12.0 and how.startswith("not in the server log")


def test_consistent_moment_is_clamped_to_the_recovery_phase(tmp_path):
    log = tmp_path / "postgres.log"
    log.write_text("2026-11-20 12:00:00.000 UTC [1] LOG:  consistent recovery state reached at 0/1\n")
    wall0 = T0.timestamp() + 100  # a log line from before the phase began (clock step): clamped
    assert consistent_at(log, start=5.0, end=9.0, wall0=wall0, t0=0.0) == (5.0, "server log")


# -- data recency -------------------------------------------------------------------------------
def test_latest_uses_the_newest_candidate_and_records_all_three():
    r = reached(recency={"heartbeat": iso(T0 - timedelta(minutes=5)),
                         "newest_segment_modified": iso(T0 - timedelta(minutes=10))})
    rec = recency(r, RestoreTarget.parse("latest"))
    assert rec["used"] == "heartbeat" and rec["seconds"] == 300.0
    assert rec["last_commit"] == iso(T0 - timedelta(minutes=30))


def test_a_quiet_database_is_judged_by_its_newest_archived_segment():
    """No commit for hours, but archive_timeout keeps shipping segments: not an RPO failure."""
    r = reached(last_replay_time=iso(T0 - timedelta(hours=6)),
                recency={"newest_segment_modified": iso(T0 - timedelta(seconds=90))})
    rec = recency(r, RestoreTarget.parse("latest"))
    assert (rec["used"], rec["seconds"]) == ("newest_segment_modified", 90.0)
    r.recency.update(rec)
    assert evidence.budget_violations(r, settings(max_rpo="5m")) == []


def test_time_target_reports_the_gap_between_last_commit_and_target():
    target = RestoreTarget.parse("2026-11-20T11:45:00Z")
    rec = recency(reached(target=str(target)), target)
    assert rec["target_gap_seconds"] == 900.0 and rec["used"] == "last_commit"


def test_lsn_target_reports_the_byte_gap():
    rec = recency(reached(replay_lsn="0/5000100"), RestoreTarget.parse("lsn:0/5000000"))
    assert rec["target_gap_bytes"] == 0x100 and rec["seconds"] is None


# -- budgets ------------------------------------------------------------------------------------
def test_rto_over_budget_names_the_measured_value_and_the_option():
    (msg,) = evidence.budget_violations(reached(), settings(max_rto="1s"))
    assert msg.startswith("RTO 3.70s exceeds --restore-max-rto=1s (from cli --restore-max-rto)")
    assert "fetch 2.00s" in msg


def test_rto_within_budget_passes():
    assert evidence.budget_violations(reached(), settings(max_rto="10s")) == []


def test_rpo_over_budget_names_the_value_and_the_candidate_used():
    r = reached()
    r.recency.update(recency(r, RestoreTarget.parse("latest")))
    (msg,) = evidence.budget_violations(r, settings(max_rpo="10m"))
    assert msg.startswith("RPO 1800.0s exceeds --restore-max-rpo=10m") and "(last_commit)" in msg


def test_rpo_that_cannot_be_measured_fails_a_budget_and_says_why():
    r = reached(last_replay_time=None, recency={"heartbeat_error": "UndefinedTable: relation \"hb\""})
    r.recency.update(recency(r, RestoreTarget.parse("latest")))
    (msg,) = evidence.budget_violations(r, settings(max_rpo="1h"))
    assert "could not be measured" in msg and "UndefinedTable" in msg


def test_budgets_do_not_judge_a_restore_that_already_failed():
    assert evidence.budget_violations(reached(outcome=Outcome.TRUNCATED), settings(max_rto="1s")) == []


# -- the record -----------------------------------------------------------------------------------
def doc_for(*results, exit_status=0, env=None, drills=()) -> dict:
    recs = []
    for r in results:
        rec = evidence.restore_record("restore[latest]", r, settings(), violations=[])
        rec["drills"] = list(drills)
        recs.append(rec)
    return evidence.document(recs, started_at=iso(T0), exit_status=exit_status, env=env or {})


def test_record_validates_against_the_published_schema():
    doc = doc_for(reached(), drills=[{"nodeid": "t.py::test_x", "outcome": "passed", "duration": 0.1,
                                      "message": None}])
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert doc["run"]["passed"] and doc["restores"][0]["passed"]


def test_a_failed_drill_fails_the_record():
    doc = doc_for(reached(), exit_status=1, drills=[{"nodeid": "t.py::test_x", "outcome": "failed",
                                                     "duration": 0.1, "message": "assert 0 == 7"}])
    jsonschema.validate(doc, SCHEMA)
    assert not doc["restores"][0]["passed"] and not doc["run"]["passed"]


def test_the_schema_rejects_a_record_without_an_outcome_field():
    doc = doc_for(reached())
    del doc["restores"][0]["outcome"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


def test_no_secret_reaches_the_record_or_any_rendering():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    env = {"AWS_SECRET_ACCESS_KEY": secret, "PGRESTORE_ALERT_WEBHOOK": "https://hooks.example.com/T0/tok3n"}
    r = reached(detail=f"botocore said {secret} was wrong, see https://hooks.example.com/T0/tok3n")
    doc = doc_for(r, exit_status=1, env=env)
    texts = [json.dumps(doc), report.markdown(doc), report.html_section(doc), report.prometheus(doc),
             "\n".join(line for line, _ in report.terminal_lines(doc["restores"])),
             json.dumps(webhook_payload(doc)), json.dumps(evidence.redact(pagerduty_event(doc, "k"), env))]
    for text in texts:
        assert secret not in text and "tok3n" not in text
    assert "<redacted>" in texts[0]


# -- renderings ------------------------------------------------------------------------------------
def test_html_section_escapes_what_it_shows():
    doc = doc_for(reached(detail="<script>alert(1)</script>"))
    section = report.html_section(doc)
    assert "<script>" not in section and "&lt;script&gt;" in section
    assert "Restore drills" in section and "base_0001" in section


def test_prometheus_textfile_has_one_series_per_source_and_target():
    text = report.prometheus(doc_for(reached(source='s3://b/p"x')))
    assert 'pgrestore_drill_success{source="s3://b/p\\"x",target="latest",outcome="REACHED"} 1' in text
    assert 'pgrestore_drill_rto_seconds{source="s3://b/p\\"x",target="latest",outcome="REACHED"} 3.7' in text
    assert text.count("# TYPE") == 4


def test_markdown_summary_is_a_table_with_the_timings():
    md = report.markdown(doc_for(reached()))
    assert "| `restore[latest]` | `s3://backups/pg/main` | base_0001 | ✅ REACHED | 3.70s |" in md
    assert "start→consistent 0.50s" in md


def test_junit_properties_carry_rto_rpo_and_each_phase():
    props = dict(report.junit_properties(doc_for(reached())["restores"][0]))
    assert props["restore_rto_seconds"] == "3.7" and props["restore_passed"] == "true"
    assert props["restore_phase_start_to_consistent_seconds"] == "0.5"


# -- the published documents ---------------------------------------------------------------------
def test_the_published_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == evidence.SCHEMA_ID


MINE = ("report", "max_rto", "max_rpo", "heartbeat_query", "metrics", "alert_webhook", "alert_pagerduty",
        "runbook_url")


@pytest.mark.parametrize("name", MINE)
def test_the_configuration_reference_lists_the_option_with_its_names(name):
    from pytest_pgrestore.settings._options import OPTIONS

    spec = next(s for s in OPTIONS if s.name == name)
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    row = next((line for line in text.splitlines() if line.startswith(f"| `{spec.cli_flag}` |")), None)
    assert row is not None, spec.cli_flag
    assert f"`{spec.ini_key}`" in row and f"`{spec.env_var}`" in row
