"""The report header says which runtime restores will use, and why."""

from __future__ import annotations

import pytest
from docker_it import docker_client_fixture  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def header(pytester: pytest.Pytester, *args: str) -> list[str]:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--co", "--restore-source=/nowhere", *args)
    return [line for line in result.outlines if line.startswith("pgrestore: runtime")]


def test_auto_with_a_daemon_says_docker(pytester, docker_client):
    (line,) = header(pytester, "--restore-runtime=auto")
    assert line.startswith("pgrestore: runtime auto: docker, the daemon at ")
    assert "image postgres:{major}, bridge network, auto transfer" in line


def test_auto_without_a_daemon_says_local_and_why(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    (line,) = header(pytester, "--restore-runtime=auto")
    assert line == f"pgrestore: runtime auto: local, because no Docker daemon answers at unix://{tmp_path}/none.sock: " \
                   + line.split(".sock: ", 1)[1]


def test_docker_without_a_daemon_warns_up_front(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    (line,) = header(pytester, "--restore-runtime=docker", "--restore-docker-network=host")
    assert "restores will fail (set DOCKER_HOST, or use --restore-runtime=local)" in line


def test_local_adds_no_runtime_line(pytester):
    assert header(pytester) == []
