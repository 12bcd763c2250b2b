"""``pgrestore gate``: the freshness gate over evidence records, each answer with its twin."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from pytest_pgrestore.cli._main import main
from pytest_pgrestore.errors import UsageError
from pytest_pgrestore.evidence import _record as evidence
from pytest_pgrestore.evidence._gate import Evidence, decide, evidence_location
from pytest_pgrestore.settings._options import source_identity

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SOURCE = "s3://backups/pg/main"
WEEK = 7 * 86400.0


def record(*, source=SOURCE, kind="latest", outcome="REACHED", passed=True, rto=42.0, rpo=60.0, drills=()):
    return {"id": f"restore[{kind}]", "source": source, "format": "walg", "target": {"text": kind, "kind": kind},
            "backup": {"name": "base_1"}, "outcome": outcome, "detail": "why", "passed": passed,
            "violations": [], "phases": [], "rto": {"seconds": rto, "served_from_cache": False},
            "rpo": {"seconds": rpo}, "drills": list(drills)}


def run(*records, age=timedelta(days=1), exit_status=0, where="run.json") -> Evidence:
    finished = (NOW - age).isoformat()
    return Evidence(where, {"schema_version": evidence.SCHEMA_VERSION, "run": {
        "finished_at": finished, "exit_status": exit_status, "ci": {"run_url": "https://ci.example/run/7"}},
        "restores": list(records)})


def gate(*docs, **kw):
    return decide(docs, source=SOURCE, max_age=WEEK, now=NOW, **kw)


def test_a_recent_passing_drill_passes():
    result = gate(run(record()))
    assert result.ok, result.reasons
    assert result.reasons[0].startswith(f"PASS: a drill of {SOURCE} passed 1d ago")
    assert "https://ci.example/run/7" in result.reasons[0]


def test_a_stale_drill_fails_naming_its_age():
    result = gate(run(record(), age=timedelta(days=8)))
    assert not result.ok
    assert "passed 8d ago" in result.reasons[0] and "older than --max-age 7d" in result.reasons[0]


def test_the_newest_drill_decides_even_when_an_older_one_passed():
    result = gate(run(record(), age=timedelta(days=2)),
                  run(record(outcome="TRUNCATED", passed=False), age=timedelta(hours=1), where="new.json"))
    assert not result.ok and "failed" in result.reasons[0] and "TRUNCATED" in result.reasons[0]


def test_a_failed_drill_test_fails_the_gate():
    bad = {"nodeid": "drills/test_x.py::test_orders", "outcome": "failed", "duration": 1.0}
    result = gate(run(record(drills=[bad]), exit_status=1))
    assert not result.ok and "drills/test_x.py::test_orders" in result.reasons[0]


def test_a_run_that_exited_non_zero_fails_the_gate():
    result = gate(run(record(), exit_status=2))
    assert not result.ok and "exited 2" in result.reasons[0]


def test_evidence_of_another_source_does_not_count():
    result = gate(run(record(source="s3://backups/pg/other")))
    assert not result.ok
    assert result.reasons == [f"no drill evidence for {SOURCE} (sources in the evidence: s3://backups/pg/other)"]


def test_each_target_kind_asked_for_must_have_passed():
    docs = [run(record(kind="latest")), run(record(kind="time"), age=timedelta(days=9))]
    assert gate(*docs, target_kinds=["latest"]).ok
    result = gate(*docs, target_kinds=["latest", "time"])
    assert not result.ok and "PASS" in result.reasons[0] and "older than" in result.reasons[1]


def test_budgets_in_the_gate():
    assert gate(run(record(rto=42.0, rpo=60.0)), max_rto=60.0, max_rpo=120.0).ok
    result = gate(run(record(rto=42.0)), max_rto=30.0)
    assert not result.ok and "RTO 42.0s, over --max-rto 30s" in result.reasons[0]
    assert not gate(run(record(rpo=None)), max_rpo=60.0).ok


def test_the_evidence_bucket_must_not_be_the_backup_bucket():
    assert evidence_location("s3://drill-evidence/pg", source=SOURCE).bucket == "drill-evidence"
    with pytest.raises(UsageError, match="is the backup source's bucket"):
        evidence_location("s3://backups/evidence", source=SOURCE)


# -- the command: exit codes -----------------------------------------------------------------------
def write(tmp_path, name, doc):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def test_cli_exit_codes(tmp_path, capsys):
    ok = run(record(), age=timedelta(hours=1)).doc
    ok["run"]["finished_at"] = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    write(tmp_path, "artifact/drill-evidence.json", ok)
    write(tmp_path, "artifact/other.json", {"not": "evidence"})  # ignored
    args = ["gate", "--evidence", str(tmp_path), "--source", SOURCE]
    assert main([*args, "--max-age", "7d"]) == 0
    assert "PASS:" in capsys.readouterr().out
    assert main([*args, "--max-age", "30m"]) == 1
    assert "older than --max-age 30m" in capsys.readouterr().err
    assert main([*args, "--max-age", "7d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records_read"] == 1
    assert main(["gate", "--evidence", str(tmp_path / "nowhere"), "--source", SOURCE, "--max-age", "7d"]) == 1
    assert "no evidence record under" in capsys.readouterr().err
    assert main([*args, "--max-age", "seven days"]) == 4
    assert main(["gate", "--evidence", "s3://backups/ev", "--source", SOURCE, "--max-age", "7d"]) == 4
    assert "is the backup source's bucket" in capsys.readouterr().err


# -- one identity of a source (issue 20): the record, the catalog and the gate agree ----------------
@pytest.mark.parametrize(("text", "identity"), [
    ("s3://b-1/p", "s3://b-1/p"),
    ("s3://b-1/p/", "s3://b-1/p"),
    ("s3://b-1//p", "s3://b-1/p"),
    ("s3://b-1/a//p//", "s3://b-1/a/p"),
    ("S3://b-1/p", "s3://b-1/p"),
    ("s3://b-1", "s3://b-1"),
    ("s3://b-1/", "s3://b-1"),
    ("s3://b-1/p?stanza=main", "s3://b-1/p?stanza=main"),
    ("s3://b-1/p/?server=pg-1", "s3://b-1/p?server=pg-1"),
    ("file:///srv/pg", "file:///srv/pg"),
    ("/srv/pg", "file:///srv/pg"),
    ("/srv/pg/", "file:///srv/pg"),
    ("file:/srv/pg", "file:///srv/pg"),
    ("file://localhost/srv//pg/", "file:///srv/pg"),
    ("/srv/a b", "file:///srv/a%20b"),
    ("file:///srv/a%20b/", "file:///srv/a%20b"),
    ("/srv/pg?stanza=main", "file:///srv/pg?stanza=main"),
])
def test_every_spelling_of_a_source_has_one_identity(text, identity):
    assert source_identity(text).text == identity
    assert source_identity(identity) == source_identity(text)  # the canonical form is a fixed point


@pytest.mark.parametrize(("one", "other"), [
    ("s3://b-1/p", "s3://b-1/q"),
    ("s3://b-1/p", "s3://b-2/p"),
    ("s3://b-1/p", "s3://b-1/p/q"),
    ("s3://b-1/p?stanza=main", "s3://b-1/p?stanza=other"),
    ("s3://b-1/p?stanza=main", "s3://b-1/p?server=main"),
    ("s3://b-1/p", "s3://b-1/p?stanza=main"),
    ("/srv/pg", "s3://srv/pg"),
    ("/srv/a b", "file:///srv/a%2520b"),
])
def test_different_sources_keep_different_identities(one, other):
    assert source_identity(one) != source_identity(other)


def test_a_malformed_source_has_no_identity():
    with pytest.raises(UsageError, match="invalid restore source"):
        source_identity("s3:/b-1/p")


@pytest.mark.parametrize("recorded", ["s3://backups/pg/main", "s3://backups/pg/main/", "s3://backups//pg/main"])
def test_a_record_matches_the_source_however_spelled(recorded):
    result = gate(run(record(source=recorded)))
    assert result.ok, result.reasons
    assert result.reasons[0].startswith(f"PASS: a drill of {SOURCE} passed")
    assert not gate(run(record(source="s3://backups/pg/main/x"))).ok  # twin: a folder under it is another


def test_a_bare_source_matches_the_drill_that_resolved_the_only_stanza():
    result = gate(run(record(source=SOURCE + "?stanza=main")))
    assert result.ok, result.reasons
    assert result.reasons[0].startswith(f"PASS: a drill of {SOURCE}?stanza=main passed")
    # twin: the newest such drill failed, and the gate says so naming the stanza
    result = gate(run(record(source=SOURCE + "?stanza=main"), age=timedelta(days=2)),
                  run(record(source=SOURCE + "/?stanza=main", outcome="TRUNCATED", passed=False), where="new.json"))
    assert not result.ok and result.reasons[0].startswith(f"FAIL: the newest drill of {SOURCE}?stanza=main failed")


def test_a_bare_destination_matches_the_drill_that_resolved_the_only_server():
    assert gate(run(record(source=SOURCE + "?server=pg-1"))).ok
    assert not gate(run(record(source="s3://backups/pg?server=main"))).ok  # twin: the selector is not the prefix


def test_a_named_stanza_matches_only_its_own_records():
    docs = [run(record(source=SOURCE + "?stanza=main"))]
    assert decide(docs, source=SOURCE + "?stanza=main", max_age=WEEK, now=NOW).ok
    result = decide(docs, source=SOURCE + "?stanza=other", max_age=WEEK, now=NOW)
    assert not result.ok
    assert result.reasons == [f"no drill evidence for {SOURCE}?stanza=other "
                              f"(sources in the evidence: {SOURCE}?stanza=main)"]
    # a record without the selector (a WAL-G source) does not answer for a named stanza either
    assert not decide([run(record())], source=SOURCE + "?stanza=main", max_age=WEEK, now=NOW).ok


def test_a_bare_source_with_drills_of_two_stanzas_is_ambiguous():
    docs = [run(record(source=SOURCE + "?stanza=main")),
            run(record(source=SOURCE + "/?stanza=reports"), where="other.json")]
    with pytest.raises(UsageError) as info:
        gate(*docs)
    message = str(info.value)
    assert f"--source {SOURCE} is ambiguous" in message and "several stanzas" in message
    assert f"{SOURCE}?stanza=main, {SOURCE}?stanza=reports" in message
    assert f"fix: name one, e.g. --source {SOURCE}?stanza=main" in message
    # twin: naming one of them decides from its records alone
    assert decide(docs, source=SOURCE + "?stanza=reports", max_age=WEEK, now=NOW).ok
    # and records of another repository's stanzas do not make this one ambiguous
    other = run(record(source="s3://backups/pg/other?stanza=reports"), where="third.json")
    assert gate(docs[0], other).ok


def test_the_command_refuses_an_ambiguous_source_as_a_usage_error(tmp_path, capsys):
    for name, stanza in (("a.json", "main"), ("b.json", "reports")):
        doc = run(record(source=f"{SOURCE}?stanza={stanza}")).doc
        doc["run"]["finished_at"] = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
        write(tmp_path, name, doc)
    args = ["gate", "--evidence", str(tmp_path), "--max-age", "7d", "--source"]
    assert main([*args, SOURCE + "/"]) == 4
    err = capsys.readouterr().err
    assert "usage error" in err and "is ambiguous" in err and f"{SOURCE}?stanza=reports" in err
    assert main([*args, SOURCE + "?stanza=main"]) == 0  # twin
    assert f"PASS: a drill of {SOURCE}?stanza=main" in capsys.readouterr().out


@pytest.mark.parametrize("recorded", ["file:///srv/pg%20x?stanza=main", "/srv/pg x/?stanza=main"])
def test_file_sources_match_however_spelled(recorded):
    for asked in ("/srv/pg x", "file:///srv/pg%20x/", "file:/srv/pg x"):
        assert decide([run(record(source=recorded))], source=asked, max_age=WEEK, now=NOW).ok, asked
    assert not decide([run(record(source=recorded))], source="/srv/pg", max_age=WEEK, now=NOW).ok  # twin


def test_a_record_without_a_source_is_no_match():
    result = gate(run(record(source=None)), run(record(source="not a url"), where="b.json"))
    assert not result.ok and result.reasons[0].startswith(f"no drill evidence for {SOURCE}")


def test_a_newer_pass_of_another_kind_does_not_hide_a_failing_latest():
    """Issue 20's acceptance: with --target-kind latest, a failing `latest` drill blocks even when a
    newer drill of another kind (a PITR to a time) passed after it."""
    docs = [run(record(kind="latest", outcome="TRUNCATED", passed=False), age=timedelta(hours=3), where="latest.json"),
            run(record(kind="time"), age=timedelta(hours=1), where="time.json")]
    result = gate(*docs, target_kinds=["latest"])
    assert not result.ok
    assert "target kind latest" in result.reasons[0] and "TRUNCATED" in result.reasons[0]
    assert gate(*docs, target_kinds=["time"]).ok  # twin: the kind that passed, asked for alone
