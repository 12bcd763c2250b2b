"""The docker runtime against a real Docker daemon, with real backups and real PostgreSQL images.

Run next to a private daemon:  scripts/docker-test-env.sh PYTHON -m pytest tests/integration/test_docker.py
(without a daemon these tests skip — unless PGR_TEST_DOCKER=required, which the script sets).
Each restore must leave nothing behind: no run dir, no container, no postgres on the runner.
"""

from __future__ import annotations

import os

import pytest
from docker_it import between, count_rows, docker_client_fixture, our_containers  # noqa: F401 (a fixture)
from it_support import Scenario, build_scenario, our_postgres_processes, run_dirs

from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

TRANSFERS = [
    pytest.param(("host", "bind"), id="host-bind"),
    pytest.param(("host", "copy"), id="host-copy"),
    pytest.param(("bridge", "bind"), id="bridge-bind"),
    pytest.param(("bridge", "copy"), id="bridge-copy"),
]


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot, docker_client):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []
    assert our_containers(docker_client) == []


@pytest.fixture(params=TRANSFERS)
def transfer(request) -> dict[str, str]:
    network, mode = request.param
    return {"runtime": "docker", "docker_network": network, "docker_mode": mode}


# -- the restore-spine scenarios, PostgreSQL 15 -------------------------------------------------
def test_latest(pg15, settings_factory, transfer):
    rows, result = count_rows(settings_factory(pg15.file_url, **transfer))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
    assert result.evidence["shutdown"] == "clean: database system is shut down"
    assert result.evidence["runtime_detail"].startswith("docker at ")
    assert f"{transfer['docker_mode']} transfer" in result.evidence["runtime_detail"]
    assert "image postgres:15" in result.evidence["binaries"]


def test_time_target(pg15, settings_factory, transfer):
    c2 = pg15.commits["c2"]
    rows, result = count_rows(settings_factory(pg15.file_url, between(c2[0], c2[1]), **transfer))
    assert (rows, result.outcome) == (pg15.rows_at("c2", 0), "REACHED")
    assert "before commit" in result.stop_reason


def test_backup_name_target(pg15, settings_factory, transfer):
    name = pg15.backups["b1"].name
    rows, result = count_rows(settings_factory(pg15.file_url, f"backup:{name}", **transfer))
    assert result.outcome == "REACHED"
    assert result.backup == name
    assert rows == len(pg15.commits["c0"])


# -- PostgreSQL 18: PGDATA elsewhere in the image, the same contract ------------------------------
@pytest.fixture(scope="module")
def pg18(workroot) -> Scenario:
    return build_scenario(workroot / "docker-pg18", major=18)


def test_pg18_latest(pg18, settings_factory, transfer):
    rows, result = count_rows(settings_factory(pg18.file_url, **transfer))
    assert (rows, result.outcome) == (pg18.total_rows, "REACHED")
    assert result.versions["postgresql"].startswith("18.")
    assert "image postgres:18" in result.evidence["binaries"]


def test_pg18_time_target(pg18, settings_factory, transfer):
    c2 = pg18.commits["c2"]
    rows, result = count_rows(settings_factory(pg18.file_url, between(c2[0], c2[1]), **transfer))
    assert (rows, result.outcome) == (pg18.rows_at("c2", 0), "REACHED")


def test_pg18_backup_name_target(pg18, settings_factory, transfer):
    name = pg18.backups["b1"].name
    rows, result = count_rows(settings_factory(pg18.file_url, f"backup:{name}", **transfer))
    assert (result.outcome, result.backup, rows) == ("REACHED", name, len(pg18.commits["c0"]))


# -- what the container is --------------------------------------------------------------------------
def test_server_runs_as_the_images_postgres_user_with_a_clean_environment(pg15, settings_factory, docker_client):
    settings = settings_factory(pg15.file_url, runtime="docker", docker_network="host", docker_mode="bind")
    with Restorer(settings).restore() as inst:
        (container,) = [docker_client.containers.get(n) for n in our_containers(docker_client)]
        top = container.exec_run(["sh", "-c", "for p in /proc/[0-9]*; do "
                                  'if [ "$(cat $p/comm)" = postgres ]; then cat $p/status; cat $p/environ | tr "\\0" "\\n"; '
                                  "break; fi; done"]).output.decode()
        uid_line = next(line for line in top.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["999"] * 4
        assert not [line for line in top.splitlines() if line.startswith(("PG", "AWS_", "WALG_"))]
        labels = container.labels
        assert labels["org.pytest-pgrestore.run-id"] == inst.run_dir.name
        assert labels["org.pytest-pgrestore.pid"] == str(os.getpid())
        assert {"boot-id", "pid-start", "started", "expires"} <= {k.rsplit(".", 1)[1] for k in labels}
        with inst.connect() as conn:
            assert conn.execute("select current_setting('archive_mode')").fetchone() == ("off",)
    assert inst.result.outcome == "REACHED"


def test_auto_transfer_binds_when_the_daemon_shares_our_files(pg15, settings_factory):
    rows, result = count_rows(settings_factory(pg15.file_url, runtime="docker", docker_network="host"))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
    assert "bind transfer" in result.evidence["runtime_detail"]


def test_kept_run_keeps_its_container_running(pg15, settings_factory, docker_client, workroot):
    settings = settings_factory(pg15.file_url, runtime="docker", docker_network="host", keep="always")
    with Restorer(settings).restore() as inst:
        (name,) = our_containers(docker_client)
    container = docker_client.containers.get(name)
    try:
        assert container.status == "running"
        assert (inst.run_dir / "keep").exists()
        from pytest_pgrestore.runtimes._docker_sweep import sweep_containers

        assert sweep_containers(docker_client) == []  # its harness (us) is alive; and it is kept
        with inst.connect() as conn:
            assert conn.execute("select count(*) from t").fetchone() == (pg15.total_rows,)
    finally:
        container.kill(signal="SIGINT")
        container.wait(timeout=30)
        container.remove(v=True)
        import shutil

        shutil.rmtree(inst.run_dir, ignore_errors=True)


@pytest.mark.parametrize("mode", ["bind", "copy"])
def test_pg_checksums_runs_inside_the_container_on_the_stopped_cluster(workroot, settings_factory, mode):
    from pytest_pgrestore.checks._corruption import verify_checksums

    root = workroot / "docker-checksums"
    if not (root / "repo").exists():
        from pytest_pgrestore.demo._source import SourceCluster

        with SourceCluster(root / "src", repo=root / "repo", major=18) as src:  # checksums on
            src.commit_rows(3)
            src.backup()
            src.commit_rows(2)
            src.switch_wal()
    settings = settings_factory(f"file://{root / 'repo'}", runtime="docker", docker_network="host", docker_mode=mode)
    with Restorer(settings).restore() as inst:
        report = verify_checksums(inst, timeout=120)
        assert report.findings == []
        assert "blocks scanned" in report.checked[0]
        with inst.connect() as conn:  # started again on the same port, the DSN still valid
            assert conn.execute("select count(*) from t").fetchone() == (5,)
