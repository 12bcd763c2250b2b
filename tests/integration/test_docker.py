"""The docker runtime against a real Docker daemon, with real backups and real PostgreSQL images.

Run next to a private daemon:  scripts/docker-test-env.sh PYTHON -m pytest tests/integration/test_docker.py
(without a daemon these tests skip — unless PGR_TEST_DOCKER=required, which the script sets).
Each restore must leave nothing behind: no run dir, no container, no postgres on the runner.
"""

from __future__ import annotations

import pytest
from docker_it import between, count_rows, docker_client, our_containers  # noqa: F401 (a fixture)
from it_support import our_postgres_processes, run_dirs

pytestmark = pytest.mark.integration

TRANSFERS = [
    pytest.param(("host", "bind"), id="host-bind"),
    pytest.param(("host", "copy"), id="host-copy"),
    pytest.param(("bridge", "bind"), id="bridge-bind"),
    pytest.param(("bridge", "copy"), id="bridge-copy"),
]


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot, docker_client):  # noqa: F811 (the imported fixture)
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
