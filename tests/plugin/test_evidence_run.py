"""Drill evidence end to end: real restores through the plugin, and every place their evidence
goes — the JSON record (checked against the published schema), JUnit under xdist, pytest-html
(opened in headless Chromium), the terminal, GitHub's step summary, the metrics textfile, the
alert receivers (a real HTTP server on 127.0.0.1) and ``pgrestore gate`` reading the record.

Two inner runs serve the whole module: a passing one under ``-n 2`` with every output on, and
a failing one whose restore replays ~160 MB of WAL, so that ``--restore-max-rto=1s`` is always
exceeded by a real measurement.  Every inner run gets fake credentials in its environment;
none of them may appear in any output.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
from plugin_support import kill_our_postgres, leftovers

from pytest_pgrestore.demo._source import SourceCluster

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "evidence.schema.json").read_text())
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLE"  # a fake AWS secret key in every inner run
HOOK_TOKEN = "T0KEN-in-the-webhook-path-9f2c"
ROUTING_KEY = "R0UTING-key-for-pagerduty-77ab"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

DRILLS = """
def test_rows_are_back(restored_db):
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {rows}

def test_connects(restored_postgres):
    assert restored_postgres.port

def test_the_verdict(restore_result):
    assert restore_result.outcome == "REACHED"
"""


def inner_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGRESTORE_", "PYTEST_ADDOPTS", "GITHUB_"))}
    env.update(AWS_ACCESS_KEY_ID="drill", AWS_SECRET_ACCESS_KEY=SECRET, COLUMNS="300", **extra)
    return env


def run_inner(cwd: Path, args: list[str], env: dict[str, str], timeout: float = 240) -> SimpleNamespace:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return SimpleNamespace(ret=proc.returncode, out=proc.stdout + proc.stderr, seconds=time.monotonic() - started)


def every_output(run: SimpleNamespace) -> dict[str, str]:
    texts = {"stdout": run.out}
    for path in run.dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".xml", ".html", ".md", ".prom"):
            texts[path.name] = path.read_text(errors="replace")
    return texts


# -- a real HTTP server that records what the alert senders post --------------------------
class Recorder(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 — http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(202)
        self.end_headers()
        self.wfile.write(b'{"status":"success"}')

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    Recorder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", received=Recorder.received)
    server.shutdown()
    server.server_close()


# -- the two inner runs ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def evidence_run(plugin_root, scenario):
    """A passing drill under xdist, with every output and budgets it meets."""
    root = plugin_root / "evidence-pass"
    root.mkdir(mode=0o755)
    (root / "test_drills.py").write_text(DRILLS.format(rows=scenario.total_rows))
    out = root / "out"
    env = inner_env(root, GITHUB_STEP_SUMMARY=str(out / "summary.md"), GITHUB_ACTIONS="true",
                    GITHUB_SERVER_URL="https://github.example", GITHUB_REPOSITORY="team/app", GITHUB_RUN_ID="4242")
    out.mkdir()
    run = run_inner(root, [
        "-n", "2", f"--restore-source={scenario.file_url}", f"--restore-workdir={root / 'runs'}",
        f"--restore-report={out / 'evidence.json'}", f"--restore-metrics={out / 'pgrestore.prom'}",
        f"--junitxml={out / 'junit.xml'}", f"--html={out / 'report.html'}", "--self-contained-html",
        "--restore-heartbeat-query=select max(written_at) from t", "--restore-max-rto=1h", "--restore-max-rpo=1d",
        "--restore-runbook-url=https://wiki.example/runbooks/restore"], env)
    run.dir, run.root = out, root
    run.doc = json.loads((out / "evidence.json").read_text()) if (out / "evidence.json").exists() else None
    yield run
    kill_our_postgres(root)


def build_busy_scenario(root: Path) -> SimpleNamespace:
    """A backup followed by ~160 MB of WAL: replaying it takes seconds, so RTO > 1s for real."""
    root.mkdir(mode=0o755)
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        src.commit_rows(1)
        src.backup()
        with src.connect() as conn:
            conn.execute("create table big as select g, repeat('x', 100) as pad from generate_series(1, 1200000) g")
        src.commit_rows(1)
        src.switch_wal()
    return SimpleNamespace(url=f"file://{root / 'repo'}", built=time.monotonic())


@pytest.fixture(scope="module")
def failing_run(plugin_root, receiver):
    """Budgets a real restore cannot meet, alerts on, a heartbeat query that fails."""
    busy = build_busy_scenario(plugin_root / "busy")
    time.sleep(max(0.0, busy.built + 2.0 - time.monotonic()))  # the newest data is > 1s old at start
    root = plugin_root / "evidence-fail"
    root.mkdir(mode=0o755)
    (root / "test_drills.py").write_text("def test_connects(restored_db):\n    restored_db.execute('select 1')\n")
    out = root / "out"
    out.mkdir()
    env = inner_env(root, PGRESTORE_ALERT_WEBHOOK=f"{receiver.url}/hook/{HOOK_TOKEN}",
                    PGRESTORE_PAGERDUTY_ROUTING_KEY=ROUTING_KEY)
    run = run_inner(root, [
        f"--restore-source={busy.url}", f"--restore-workdir={root / 'runs'}", "--restore-max-rto=1s",
        "--restore-max-rpo=1s", f"--restore-report={out / 'evidence.json'}", "-rA",
        f"--restore-alert-pagerduty={receiver.url}/pd", "--restore-runbook-url=https://wiki.example/rb",
        "--restore-heartbeat-query=select max(ts) from no_such_heartbeat_table"], env)
    run.dir, run.root, run.source = out, root, busy.url
    run.doc = json.loads((out / "evidence.json").read_text()) if (out / "evidence.json").exists() else None
    yield run
    kill_our_postgres(root)


# -- the passing run ---------------------------------------------------------------------------
def test_the_record_validates_and_its_phases_add_up_to_the_rto(evidence_run, scenario):
    assert evidence_run.ret == 0, evidence_run.out
    doc = evidence_run.doc
    jsonschema.validate(doc, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert doc["run"]["passed"] and doc["run"]["exit_status"] == 0
    assert doc["run"]["ci"]["run_url"] == "https://github.example/team/app/actions/runs/4242"
    (rec,) = doc["restores"]
    assert (rec["id"], rec["outcome"], rec["passed"]) == ("restore[latest]", "REACHED", True)
    assert rec["backup"]["name"] == scenario.backups["b2"].name and rec["backup"]["bytes_fetched"] > 0
    names = [p["name"] for p in rec["phases"]]
    assert names == ["catalog", "plan", "binaries", "fetch", "verify", "prepare", "start_to_consistent",
                     "consistent_to_target", "target_to_first_query", "drills"]
    in_rto = sum(p["seconds"] for p in rec["phases"] if p["in_rto"])
    assert abs(in_rto - rec["rto"]["seconds"]) < 0.02, rec["phases"]
    started, first = (datetime.fromisoformat(rec[k]) for k in ("started_at", "first_query_at"))
    assert abs((first - started).total_seconds() - rec["rto"]["seconds"]) < 0.01
    assert rec["consistent_from"] == "server log"
    assert sorted(d["outcome"] for d in rec["drills"]) == ["passed"] * 3
    assert {d.get("worker") for d in rec["drills"]} <= {"gw0", "gw1"}
    rpo = rec["rpo"]
    assert all(rpo["candidates"][k] for k in ("last_commit", "heartbeat", "newest_segment_modified"))
    assert rpo["used"] in rpo["candidates"] and 0 <= rpo["seconds"] < 86400
    assert set(rec["wal_prefetch"]) >= {"bytes", "busy_seconds", "replay_waited_seconds"}
    assert rec["wal_prefetch"]["bytes"] > 0
    assert rec["violations"] == [] and rec["rto"]["budget_seconds"] == 3600


def test_junit_properties_reach_the_controller_under_xdist(evidence_run):
    import xml.etree.ElementTree as ET

    cases = ET.parse(evidence_run.dir / "junit.xml").getroot().iter("testcase")
    (case,) = [c for c in cases if c.get("name") == "restore[latest]"]
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    rec = evidence_run.doc["restores"][0]
    assert props["restore_outcome"] == "REACHED" and props["restore_passed"] == "true"
    assert float(props["restore_rto_seconds"]) == rec["rto"]["seconds"]
    assert float(props["restore_phase_fetch_seconds"]) > 0
    assert props["restore_rpo_used"] == rec["rpo"]["used"]


def test_terminal_summary_step_summary_and_metrics(evidence_run):
    rec = evidence_run.doc["restores"][0]
    lines = evidence_run.out.splitlines()
    at = next(i for i, line in enumerate(lines) if " restore evidence " in line)
    assert lines[at + 1].startswith(f"restore[latest] REACHED: RTO {rec['rto']['seconds']:.2f}s, RPO ")
    assert lines[at + 2].startswith("  phases: catalog ") and "start→consistent" in lines[at + 2]
    assert "replay waited" in lines[at + 3]
    md = (evidence_run.dir / "summary.md").read_text()
    assert "| restore | source | backup | outcome | RTO | RPO | drills |" in md
    assert f"| ✅ REACHED | {rec['rto']['seconds']:.2f}s |" in md
    prom = (evidence_run.dir / "pgrestore.prom").read_text()
    labels = f'source="{rec["source"]}",target="latest",outcome="REACHED"'
    assert f"pgrestore_drill_success{{{labels}}} 1" in prom
    assert f"pgrestore_drill_rto_seconds{{{labels}}} {rec['rto']['seconds']}" in prom


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian package chromium) is not installed")
def test_html_report_shows_the_restore_section_in_a_real_browser(evidence_run, plugin_root):
    rec = evidence_run.doc["restores"][0]
    html = evidence_run.dir / "report.html"
    profile = plugin_root / "chromium-profile"
    shot = evidence_run.dir / "report.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--window-size=1280,1400"]
    subprocess.run([*base, f"--screenshot={shot}", html.as_uri()], capture_output=True, timeout=60, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    section = dom[dom.index("Restore drills"):]  # rendered by the browser, not only present in the file
    for shown in ("restore[latest]: REACHED", rec["backup"]["name"], "target", "latest", "RTO",
                  f"{rec['rto']['seconds']:.2f}s", "start→consistent", "target→first query"):
        assert shown in section, shown


def test_gate_passes_on_the_fresh_evidence_and_fails_on_stale(evidence_run, scenario, tmp_path):
    gate = [sys.executable, "-m", "pytest_pgrestore.cli", "gate", "--source", scenario.file_url, "--max-age", "7d"]
    ok = subprocess.run([*gate, "--evidence", str(evidence_run.dir)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"PASS: a drill of {scenario.file_url} passed ")
    stale = json.loads(json.dumps(evidence_run.doc))
    stale["run"]["finished_at"] = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    (tmp_path / "evidence.json").write_text(json.dumps(stale))
    old = subprocess.run([*gate, "--evidence", str(tmp_path)], capture_output=True, text=True)
    assert old.returncode == 1 and "older than --max-age 7d" in old.stderr, old.stderr


def test_no_secret_in_any_output_of_the_passing_run(evidence_run):
    for name, text in every_output(evidence_run).items():
        assert SECRET not in text, name
    assert leftovers(evidence_run.root) == ([], [])


# -- the failing run ---------------------------------------------------------------------------
def test_max_rto_fails_a_real_restore_with_the_measured_rto(failing_run):
    run = failing_run
    assert run.ret == 1, run.out
    (rec,) = run.doc["restores"]
    rto = rec["rto"]["seconds"]
    assert rec["outcome"] == "REACHED" and not rec["passed"] and rto > 1
    message = f"RTO {rto:.2f}s exceeds --restore-max-rto=1s (from cli --restore-max-rto)"
    assert any(line.startswith(f"FAILED test_drills.py::restore[latest] - restore[latest]: {message}")
               for line in run.out.splitlines()), run.out
    assert rec["violations"][0].startswith(message)
    assert any(v.startswith("RPO ") and "exceeds --restore-max-rpo=1s" in v for v in rec["violations"])
    assert rec["rpo"]["heartbeat_error"].startswith("UndefinedTable")  # recorded, the other candidates used
    assert rec["rpo"]["used"] in ("last_commit", "newest_segment_modified")
    jsonschema.validate(run.doc, SCHEMA)
    assert [d["outcome"] for d in rec["drills"]] == ["passed"]  # the data was fine; the budget was not


def test_alerts_reach_a_real_http_server_without_credentials(failing_run, receiver):
    assert failing_run.ret == 1
    by_path = {r["path"]: r for r in receiver.received}
    assert set(by_path) == {f"/hook/{HOOK_TOKEN}", "/pd"}, list(by_path)
    hook = json.loads(by_path[f"/hook/{HOOK_TOKEN}"]["body"])
    assert hook["event"] == "pgrestore.drill_failed" and hook["runbook_url"] == "https://wiki.example/rb"
    assert hook["summary"].startswith(f"restore drill failed: {failing_run.source} restore[latest] REACHED: RTO ")
    assert hook["failures"][0]["budget_exceeded"][0].startswith("RTO ")
    pd = json.loads(by_path["/pd"]["body"])
    assert (pd["routing_key"], pd["event_action"], pd["payload"]["severity"]) == (ROUTING_KEY, "trigger", "critical")
    assert {"href": "https://wiki.example/rb", "text": "runbook"} in pd["links"]
    for raw in (by_path[f"/hook/{HOOK_TOKEN}"]["body"], by_path["/pd"]["body"]):
        assert SECRET not in raw and HOOK_TOKEN not in raw and "password" not in raw.lower()
    assert by_path["/pd"]["body"].count(ROUTING_KEY) == 1  # PagerDuty's own field, nowhere else
    assert failing_run.doc["run"]["alerts"] == [{"kind": "webhook", "status": "202"},
                                                {"kind": "pagerduty", "status": "202"}]
    for name, text in every_output(failing_run).items():
        assert SECRET not in text and HOOK_TOKEN not in text and ROUTING_KEY not in text, name


def test_gate_refuses_the_failed_drill(failing_run):
    gate = subprocess.run([sys.executable, "-m", "pytest_pgrestore.cli", "gate", "--evidence", str(failing_run.dir),
                           "--source", failing_run.source, "--max-age", "7d"], capture_output=True, text=True)
    assert gate.returncode == 1
    assert re.search(r"FAIL: the newest drill of \S+ failed .*: RTO \d+\.\d\ds exceeds --restore-max-rto=1s",
                     gate.stderr), gate.stderr


# -- exit codes a gate can trust (no restore needed) ------------------------------------------
def test_exit_codes(pytester, tmp_path):
    pytester.makepyfile(test_plain="def test_ok():\n    pass\n")
    assert pytester.runpytest_inprocess("-p", "no:cacheprovider").ret == 0  # no source: plugin stays out

    report = tmp_path / "evidence.json"
    empty = pytester.mkdir("empty")
    result = pytester.runpytest_inprocess(str(empty), "--restore-source=/srv/backups", f"--restore-report={report}")
    assert result.ret == 1, "no drill ran with a source configured: nothing proven"
    result.stdout.fnmatch_lines(["pgrestore: no drill ran although a backup source is configured (from cli "
                                 "--restore-source): nothing was proven, so pytest's exit status 5 *"])
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, SCHEMA)
    assert (doc["run"]["exit_status"], doc["run"]["passed"], doc["restores"]) == (1, False, [])
    assert pytester.runpytest_inprocess(str(empty)).ret == 5  # no source: pytest's own answer

    pytester.makepyfile(test_stop="def test_interrupted():\n    raise KeyboardInterrupt\n")
    assert pytester.runpytest_inprocess("test_stop.py", "--restore-source=/srv/backups", no_reraise_ctrlc=True).ret == 2

    for bad, shown in (("--restore-max-rto=soon", "invalid duration 'soon' (from --restore-max-rto)"),
                       ("--restore-alert-pagerduty=on", "needs the routing key in env PGRESTORE_PAGERDUTY_ROUTING_KEY"),
                       ("--restore-alert-webhook=hooks.example.com/tok-hidden-77", "invalid URL (not shown")):
        result = pytester.runpytest_inprocess("test_plain.py", bad)
        assert result.ret == 4, bad
        assert shown in "\n".join(result.errlines), result.errlines
    assert "tok-hidden-77" not in "\n".join(result.outlines + result.errlines)
