"""barman-cloud destinations as drill sources: real barman-cloud-backup backups of a real server
whose archive_command is barman-cloud-wal-archive, into SeaweedFS over TLS (AWS_CA_BUNDLE).

Scenario: demo schema, commits ``c0`` → backup b1 (gzip) → ``c1`` → ``rp_between`` → backup b2
(no compression) → incident → ``c2`` → WAL switch; WAL archived with --gzip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from it_support import our_postgres_processes, run_dirs
from tool_support import (
    BarmanCloud,
    ToolScenario,
    barman_source,
    drill_with_report,
    gate_cli,
    history,
    self_signed_cert,
)

from pytest_pgrestore.demo._seaweed import SeaweedS3
from pytest_pgrestore.errors import FormatError, PreflightError
from pytest_pgrestore.formats._barman import ServerError
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (Path(sys.executable).parent / "barman-cloud-backup").exists(),
                                 reason="pip install 'barman[cloud]'")]

BUCKET = "barman"


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


@pytest.fixture(scope="module")
def tls_s3(workroot):
    cert, key = self_signed_cert(workroot / "barman-tls")
    with SeaweedS3(workroot / "barman-s3", tls=(cert, key)) as s3:
        s3.cert = cert
        s3.create_bucket(BUCKET)
        yield s3


def https_env(s3) -> dict[str, str]:
    return {**s3.env(readonly=True), "AWS_ENDPOINT_URL": s3.https_endpoint, "AWS_CA_BUNDLE": str(s3.cert)}


@pytest.fixture(scope="module")
def barman(workroot, tls_s3) -> ToolScenario:
    tool = BarmanCloud(workroot / "barman-tool", endpoint=tls_s3.https_endpoint, ca_bundle=tls_s3.cert,
                       bucket=BUCKET, path="cloud", server="pg", key=tls_s3.admin.access_key,
                       secret=tls_s3.admin.secret_key, wal_compression="gzip")
    with barman_source(workroot / "barman-src", tool) as src:
        sc = history(src, lambda kind: tool.backup(src, compression="gzip" if kind == "full" else None),
                     second="plain", tablespace=workroot / "barman-ts")
    sc.url, sc.env = f"s3://{BUCKET}/cloud", https_env(tls_s3)
    return sc


def restore_rows(settings) -> tuple[int, object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            return conn.execute("select count(*) from t").fetchone()[0], inst.result


def keys(s3, prefix: str) -> list[str]:
    client = s3.admin_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))
    finally:
        client.close()


def copy_prefix(s3, src: str, dst: str, *, skip: str | None = None) -> None:
    """Server-side copies of every object under ``src`` to ``dst`` (except keys ending in ``skip``)."""
    client = s3.admin_client()
    try:
        for key in keys(s3, src):
            if skip and key.endswith(skip):
                continue
            client.copy_object(Bucket=BUCKET, Key=dst + key[len(src):], CopySource={"Bucket": BUCKET, "Key": key})
    finally:
        client.close()


# -- latest, a time between two commits, each backup by name -----------------------------------
def test_latest_replays_every_commit_and_never_writes_to_the_destination(barman, tls_s3, settings_factory):
    before = keys(tls_s3, "cloud/")
    rows, result = restore_rows(settings_factory(barman.url, env=barman.env))
    assert (rows, result.outcome, result.format) == (barman.total_rows, "REACHED", "barman")
    assert result.backup == barman.backups["b2"]
    assert result.source.endswith("?server=pg")  # the only server, picked and shown
    assert keys(tls_s3, "cloud/") == before


def test_tablespace_lands_in_the_run_dir(barman, settings_factory):
    with Restorer(settings_factory(barman.url, env=barman.env)).restore() as inst:
        with inst.connect() as conn:
            assert conn.execute("select count(*) from in_ts").fetchone()[0] == 100
            (location,) = conn.execute("select pg_tablespace_location(oid) from pg_tablespace "
                                       "where spcname = 'ts1'").fetchone()
        assert location.startswith(str(inst.run_dir)), location


@pytest.mark.parametrize("name,index,backup", [("c1", 0, "b1"), ("c2", 1, "b2")])
def test_time_between_two_commits(barman, settings_factory, name, index, backup):
    rows, result = restore_rows(settings_factory(barman.url, barman.between(name, index), env=barman.env))
    assert (rows, result.outcome, result.backup) == (barman.rows_at(name, index), "REACHED", barman.backups[backup])


@pytest.mark.parametrize("role,rows,tar", [("b1", 2, "data.tar.gz"), ("b2", 4, "data.tar")])
def test_named_backup_with_and_without_gzip(barman, settings_factory, role, rows, tar):
    catalog = Restorer(settings_factory(barman.url, env=barman.env)).catalog()
    assert sorted(catalog.backup(barman.backups[role]).details["tars"])[-1] == tar  # after <oid>.tar
    got, result = restore_rows(settings_factory(barman.url, f"backup:{barman.backups[role]}", env=barman.env))
    assert (got, result.outcome) == (rows, "REACHED")


def test_wal_is_fetched_ahead_by_the_harness(barman, settings_factory):
    """Every planned segment comes from the spool (fetched in parallel ahead of replay): no
    barman-cloud-wal-restore process per segment, no on-demand fetch but the end-of-archive probes."""
    _rows, result = restore_rows(settings_factory(barman.url, barman.between("c2", 1), env=barman.env))
    assert result.wal_segments >= result.evidence["planned_segments"] >= 2
    # outside the plan only: history probes and a look past the planned end
    on_demand = [n for n in result.evidence["wal_on_demand"] if not n.endswith(".history")]
    assert len(on_demand) <= 1, result.evidence["wal_on_demand"]


def test_same_drill_files_pass_unchanged(barman, workroot):
    drills = Path(__file__).resolve().parents[2] / "drills"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    env.update(barman.env, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               PGRESTORE_DRILL_INCIDENT_AT=barman.incident_at)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(drills), "-p", "no:cacheprovider", "-q",
         f"--restore-source={barman.url}", f"--restore-workdir={workroot / 'runs'}"],
        cwd=drills.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout and "skipped" not in proc.stdout


def test_gate_passes_a_bare_destination_whose_drill_resolved_the_only_server(barman, workroot):
    """issue 20: the drill of the bare destination records ``…?server=pg``; ``pgrestore gate`` asked
    with the bare destination finds it; twin: a newer failing drill of it fails the gate."""
    evidence = workroot / "barman-gate-evidence"
    shutil.rmtree(evidence, ignore_errors=True)
    evidence.mkdir()
    env = {**barman.env, "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    proc = drill_with_report(barman, workroot, barman.url + "/", "latest", evidence / "drill-1.json", env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert json.loads((evidence / "drill-1.json").read_text())["restores"][0]["source"] == f"{barman.url}?server=pg"
    gate = gate_cli(evidence, barman.url)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert f"PASS: a drill of {barman.url}?server=pg passed" in gate.stdout
    # twin: a newer drill of the same destination, its target past the archive, fails
    proc = drill_with_report(barman, workroot, barman.url, "lsn:FF/0", evidence / "drill-2.json", env)
    assert proc.returncode != 0, proc.stdout[-4000:]
    gate = gate_cli(evidence, barman.url)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert f"FAIL: the newest drill of {barman.url}?server=pg failed" in gate.stderr and "drill-2.json" in gate.stderr


# -- twins ----------------------------------------------------------------------------------------
def test_twin_deleted_wal_segment_is_refused_before_download(barman, tls_s3, settings_factory):
    catalog = Restorer(settings_factory(barman.url, env=barman.env)).catalog()
    needed = catalog.backup(barman.backups["b2"]).details["end_wal"]
    copy_prefix(tls_s3, "cloud/pg/", "twin-gap/pg/", skip=f"/{needed}.gz")
    with pytest.raises(PreflightError) as err:
        restore_rows(settings_factory(f"s3://{BUCKET}/twin-gap", env=barman.env))
    assert needed in err.value.what
    assert err.value.result.outcome == "REFUSED_PREFLIGHT" and err.value.result.bytes_fetched == 0


# -- servers --------------------------------------------------------------------------------------
def test_several_servers_fail_before_download_listing_them(barman, tls_s3, settings_factory):
    copy_prefix(tls_s3, "cloud/pg/", "two/pg/")
    copy_prefix(tls_s3, "cloud/pg/", "two/pg-replica/")
    with pytest.raises(ServerError) as err:
        Restorer(settings_factory(f"s3://{BUCKET}/two", env=barman.env)).catalog()
    assert "holds 2 servers: pg, pg-replica" in err.value.what and "?server=" in err.value.fix
    rows, result = restore_rows(settings_factory(f"s3://{BUCKET}/two?server=pg-replica", barman.between("c1", 0),
                                                 env=barman.env))
    assert (rows, result.outcome) == (barman.rows_at("c1", 0), "REACHED")
    with pytest.raises(ServerError, match="server 'nope' is not in"):
        Restorer(settings_factory(f"s3://{BUCKET}/two?server=nope", env=barman.env)).catalog()


def test_source_pointing_straight_at_the_server_folder(barman, settings_factory):
    catalog = Restorer(settings_factory(f"{barman.url}/pg", env=barman.env)).catalog()
    assert catalog.format == "barman" and len(catalog.backups) == 2 and catalog.selector is None
    rows, result = restore_rows(settings_factory(f"{barman.url}/pg", barman.between("c2", 0), env=barman.env))
    assert (rows, result.outcome) == (barman.rows_at("c2", 0), "REACHED")


# -- a failover: timeline 2, its gzipped history file in wals/ ------------------------------------
def test_latest_follows_the_new_timeline_after_a_failover(workroot, tls_s3, settings_factory):
    tool = BarmanCloud(workroot / "barman-tli-tool", endpoint=tls_s3.https_endpoint, ca_bundle=tls_s3.cert,
                       bucket=BUCKET, path="tli", server="pg", key=tls_s3.admin.access_key,
                       secret=tls_s3.admin.secret_key, wal_compression="gzip")
    with barman_source(workroot / "barman-tli-src", tool) as src:
        src.commit_rows(2)
        tool.backup(src)
        src.commit_rows(2)
        assert src.new_timeline() == 2
        src.commit_rows(3)
        src.switch_wal()
    assert "tli/pg/wals/00000002.history.gz" in keys(tls_s3, "tli/pg/wals/")
    rows, result = restore_rows(settings_factory(f"s3://{BUCKET}/tli", env=https_env(tls_s3)))
    assert (rows, result.outcome, result.timeline) == (7, "REACHED", 2)


# -- auto-detection -------------------------------------------------------------------------------
def test_nothing_recognised_lists_every_layout_looked_for(barman, tls_s3, settings_factory):
    copy_prefix(tls_s3, "cloud/pg/wals/", "not-a-backup/wals/")
    with pytest.raises(FormatError) as err:
        Restorer(settings_factory(f"s3://{BUCKET}/not-a-backup", env=barman.env)).catalog()
    assert "no backup found" in err.value.what
    for hint in ("basebackups/", "basebackups_005", "archive/<stanza>/archive.info", "<server>/base/"):
        assert hint in err.value.checked
    assert "found wals" in err.value.checked


def test_server_selector_on_a_pgbackrest_style_query_is_refused(barman, settings_factory):
    with pytest.raises(FormatError, match=r"\?stanza= does not apply to the barman format"):
        Restorer(settings_factory(f"{barman.url}?stanza=main", format="barman", env=barman.env)).catalog()
