"""Helpers and fixtures for the docker-runtime integration tests (import the fixtures you use).

A daemon is found like the library finds it (DOCKER_HOST, docker context).  Without one the
tests skip, unless ``PGR_TEST_DOCKER=required`` (set by scripts/docker-test-env.sh): then they
fail, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os

import pytest

from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.runtimes._docker_sweep import LABEL

__all__ = ["docker_client_fixture", "count_rows", "between", "our_containers"]


@pytest.fixture(scope="session", name="docker_client")
def docker_client_fixture():
    try:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:
        if os.environ.get("PGR_TEST_DOCKER") == "required":
            pytest.fail(f"PGR_TEST_DOCKER=required but no Docker daemon answers: {exc}")
        pytest.skip(f"no Docker daemon answers (run via scripts/docker-test-env.sh): {exc}")
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # no registry here for Ryuk's image
    yield client
    client.close()


def our_containers(client) -> list[str]:
    """Containers this process labelled (a concurrent run's are not ours)."""
    return sorted(c.name for c in client.containers.list(all=True, filters={"label": f"{LABEL}.pid={os.getpid()}"}))


def count_rows(settings, hooks=None) -> tuple[int, object]:
    with Restorer(settings, hooks=hooks).restore() as inst:
        with inst.connect() as conn:
            return conn.execute("select count(*) from t").fetchone()[0], inst.result


def between(a, b) -> str:
    return (a.time + (b.time - a.time) / 2).isoformat().replace("+00:00", "Z")
