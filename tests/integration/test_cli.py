"""``pgrestore`` end to end against real backups in SeaweedFS, successes next to their failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from it_support import our_postgres_processes, postmaster_of

from pytest_pgrestore.restore._rundir import free_port, list_run_dirs

pytestmark = pytest.mark.integration

PGRESTORE = [sys.executable, "-m", "pytest_pgrestore.cli"]


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    full_env.update(env or {})
    return subprocess.run([*PGRESTORE, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def gap_source(pg15, seaweed):
    """The pg15 archive with one segment deleted from the middle of the needed range."""
    segments = sorted(p.name for p in (pg15.repo / "wal").iterdir() if len(p.name) == 24)
    victim = segments[-2]
    seaweed.upload_dir(pg15.repo, "drills", "gap")
    seaweed.admin_client().delete_object(Bucket="drills", Key=f"gap/wal/{victim}")
    return "s3://drills/gap", victim


def test_list_shows_every_backup(pg15):
    out = run("list", pg15.s3_url, env=pg15.s3_env)
    assert out.returncode == 0, out.stderr
    for b in pg15.backups.values():
        assert b.name in out.stdout
    data = json.loads(run("list", pg15.s3_url, "--json", env=pg15.s3_env).stdout)
    assert [b["name"] for b in data["backups"]] == [pg15.backups["b1"].name, pg15.backups["b2"].name]
    assert data["backups"][0]["pg_version"] == 15


def test_list_of_a_prefix_without_backups_names_it(pg15, seaweed):
    out = run("list", "s3://drills/nothing-here", env=pg15.s3_env)
    assert out.returncode == 1
    assert "no backup found under s3://drills/nothing-here" in out.stderr
    assert seaweed.endpoint in out.stderr and "Traceback" not in out.stderr


def test_plan_names_backup_and_wal(pg15):
    out = run("plan", pg15.s3_url, "--target", "latest", "--json", env=pg15.s3_env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["backup"] == pg15.backups["b2"].name and data["wal_segments"] >= 1


def test_plan_with_missing_wal_fails_naming_the_segment(pg15, gap_source):
    url, victim = gap_source
    out = run("plan", url, "--target", "latest", env=pg15.s3_env)
    assert out.returncode == 1
    assert victim in out.stderr and "reachable without a gap up to" in out.stderr


def test_plan_of_an_unreachable_target(pg15):
    out = run("plan", pg15.s3_url, "--target", "lsn:FF/0", env=pg15.s3_env)
    assert out.returncode == 1 and "past the newest archived WAL" in out.stderr


def test_verify_healthy_repository(pg15):
    out = run("verify", pg15.s3_url, "--min-backups", "2", "--max-age", "1h", env=pg15.s3_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FOUND" in out.stdout and "MISSING" not in out.stdout


def test_verify_with_a_deleted_segment_names_the_missing_range(pg15, gap_source):
    url, victim = gap_source
    out = run("verify", url, "--json", env=pg15.s3_env)
    assert out.returncode == 1
    runs = json.loads(out.stdout)["wal"]
    assert {"timeline": 1, "first": victim, "last": victim, "count": 1, "status": "MISSING"} in runs


def test_verify_too_few_or_too_old_backups_fails(pg15):
    out = run("verify", pg15.s3_url, "--min-backups", "5", env=pg15.s3_env)
    assert out.returncode == 1 and "at least 5 required" in out.stdout
    out = run("verify", pg15.s3_url, "--max-age", "1s", env=pg15.s3_env)
    assert out.returncode == 1 and "older than the allowed 1s" in out.stdout


def test_denied_credentials_fail_without_printing_the_secret(pg15, seaweed):
    env = {**pg15.s3_env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-value-123"}
    out = run("list", pg15.s3_url, env=env)
    assert out.returncode == 1
    assert "wrong-secret-value-123" not in out.stdout + out.stderr
    assert pg15.s3_env["AWS_SECRET_ACCESS_KEY"] not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_endpoint_names_it(pg15):
    env = {**pg15.s3_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    out = run("list", pg15.s3_url, env=env)
    assert out.returncode == 1 and "127.0.0.1:9" in out.stderr


def test_usage_errors_exit_4(pg15):
    assert run("plan", "gs://bucket/x").returncode == 4
    assert run("plan", pg15.s3_url, "--target", "2026-11-20T12:00:00", env=pg15.s3_env).returncode == 4
    assert run("frobnicate").returncode == 4
    out = run("list")
    assert out.returncode == 4 and "no backup source configured" in out.stderr


def test_help_reads_well():
    out = run("--help")
    assert out.returncode == 0
    for command in ("list", "plan", "verify", "restore", "wal-fetch"):
        assert command in out.stdout
        assert run(command, "--help").returncode == 0


def test_restore_keep_running_then_stop(pg15, workroot):
    pgdata = workroot / "cli-restore-pgdata"
    port = free_port()  # a fixed port can be another test's ephemeral one under xdist
    out = run("restore", pg15.s3_url, "--pgdata", str(pgdata), "--listen-port", str(port), "--keep-running",
              env={**pg15.s3_env, "PGRESTORE_WORKDIR": str(workroot / "cli-runs")})
    assert out.returncode == 0, out.stderr
    assert "REACHED" in out.stdout and "kill -INT" in out.stderr
    (run_dir,) = list_run_dirs(workroot / "cli-runs")
    try:
        password = (run_dir / "password").read_text().strip()
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password,
                             dbname="postgres") as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == pg15.total_rows
    finally:
        pid = postmaster_of(run_dir, pgdata)
        assert pid, "the postmaster is found under its supervisor"
        os.kill(int((run_dir / "supervisor.pid").read_text()), 2)  # what the message says to do
        for _ in range(100):
            if not os.path.isdir(f"/proc/{pid}"):
                break
            subprocess.run(["sleep", "0.1"])
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(pgdata, ignore_errors=True)
    assert not os.path.isdir(f"/proc/{pid}")


def test_restore_without_keep_running_leaves_a_stopped_pgdata(pg15, workroot):
    pgdata = workroot / "cli-restore-stopped"
    out = run("restore", pg15.s3_url, "--pgdata", str(pgdata), "--target", "immediate",
              env={**pg15.s3_env, "PGRESTORE_WORKDIR": str(workroot / "cli-runs2")})
    try:
        assert out.returncode == 0, out.stderr
        assert (pgdata / "PG_VERSION").exists() and not (pgdata / "postmaster.pid").exists()
        assert list_run_dirs(workroot / "cli-runs2") == []
        assert our_postgres_processes(workroot) == []
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


def test_restore_refused_target_exits_1_and_leaves_nothing(pg15, gap_source, workroot):
    url, _ = gap_source
    pgdata = workroot / "cli-restore-refused"
    out = run("restore", url, "--pgdata", str(pgdata),
              env={**pg15.s3_env, "PGRESTORE_WORKDIR": str(workroot / "cli-runs3")})
    assert out.returncode == 1 and "missing from the archive" in out.stderr
    assert not pgdata.exists() or not any(pgdata.iterdir())


def test_wal_fetch_contract(pg15, tmp_path_factory):
    dest = Path(tmp_path_factory.mktemp("walfetch")) / "RECOVERYXLOG"
    segment = sorted(p.name for p in (pg15.repo / "wal").iterdir() if len(p.name) == 24)[0]
    ok = run("wal-fetch", pg15.s3_url, segment, str(dest), env=pg15.s3_env)
    assert ok.returncode == 0, ok.stderr
    assert dest.read_bytes() == (pg15.repo / "wal" / segment).read_bytes()
    absent = run("wal-fetch", pg15.s3_url, "0000000900000000000000FF", str(dest), env=pg15.s3_env)
    assert absent.returncode == 1
    broken = run("wal-fetch", pg15.s3_url, segment, str(dest),
                 env={**pg15.s3_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert broken.returncode >= 126  # never "absent" when the store cannot be asked
