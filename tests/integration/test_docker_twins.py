"""The docker runtime's failure modes, each beside what it must do instead of succeeding.

No daemon, an image that cannot be had, a WAL segment missing during replay, a container killed
mid-recovery, a harness SIGKILLed mid-drill: each fails by name and leaves nothing behind (the
last one leaves a container that the next run removes, and a concurrent run's stay).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from docker_it import count_rows, docker_client_fixture, our_containers  # noqa: F401 (a fixture)
from it_support import copy_repo, our_postgres_processes, run_dirs

from pytest_pgrestore.errors import BinariesNotFound, PgRestoreError, RestoreFailed
from pytest_pgrestore.restore._instance import Hooks
from pytest_pgrestore.runtimes._docker import DockerUnavailable, ImageUnavailable
from pytest_pgrestore.runtimes._docker_sweep import LABEL, run_labels

pytestmark = pytest.mark.integration

BIND_COPY = [pytest.param("bind", id="bind"), pytest.param("copy", id="copy")]


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot, docker_client):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []
    assert our_containers(docker_client) == []


def docker_settings(settings_factory, source, target="latest", **cli):
    cli = {"runtime": "docker", "docker_network": "host", "docker_mode": "bind", **cli}
    return settings_factory(source, target, **cli)


def newest_segment(repo: Path) -> Path:
    return max(p for p in (repo / "wal").iterdir() if len(p.name) == 24)


# -- no daemon, no image -------------------------------------------------------------------------
def test_no_daemon_says_how_to_point_at_one(pg15, settings_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(DockerUnavailable) as err:
        count_rows(docker_settings(settings_factory, pg15.file_url))
    text = str(err.value)
    assert f"no Docker daemon answers at unix://{tmp_path}/no-daemon.sock" in text
    assert "DOCKER_HOST" in err.value.fix and "--restore-runtime=local" in err.value.fix


def test_twin_auto_without_a_daemon_falls_back_to_local_and_says_so(pg15, settings_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    rows, result = count_rows(settings_factory(pg15.file_url, runtime="auto"))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
    assert result.evidence["runtime"].startswith("local: no Docker daemon answers")
    assert "/usr/lib/postgresql" in result.evidence["binaries"] or "pg_config" in result.evidence["binaries"]


def test_auto_with_a_daemon_and_the_image_picks_docker(pg15, settings_factory):
    rows, result = count_rows(settings_factory(pg15.file_url, runtime="auto", docker_network="host"))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
    assert result.evidence["runtime"].startswith("docker: the daemon at ")
    assert "has postgres:15" in result.evidence["runtime"]


def test_image_not_present_and_not_pullable_fails_fast_with_its_name(pg15, settings_factory):
    started = time.monotonic()
    with pytest.raises(ImageUnavailable) as err:
        count_rows(docker_settings(settings_factory, pg15.file_url, image="pgrestore-test/absent:{major}-x"))
    assert time.monotonic() - started < 30
    assert "image pgrestore-test/absent:15-x is not present on the Docker daemon and could not be pulled" in str(
        err.value
    )
    assert "--restore-image" in err.value.fix


def test_image_of_another_major_is_refused_before_download(pg15, settings_factory):
    with pytest.raises(BinariesNotFound) as err:
        count_rows(docker_settings(settings_factory, pg15.file_url, image="postgres:18"))
    assert "image postgres:18 declares PG_MAJOR=18, the backup needs PostgreSQL 15" in str(err.value)
    assert err.value.result.bytes_fetched == 0


# -- WAL missing during replay: the same verdict as the local runtime ------------------------------
@pytest.mark.parametrize("mode", BIND_COPY)
def test_twin_last_segment_missing_during_replay_is_truncated(pg15, settings_factory, workroot, mode):
    repo = copy_repo(pg15, workroot / f"docker-trunc-{mode}")
    try:
        last = newest_segment(repo)
        held = last.rename(last.with_name(".held"))
        put_back = threading.Event()

        def after_start(server):
            def watch():  # the harness's spool answers "absent" in both modes
                absent = server.run_dir / "spool" / f"{last.name}.absent"
                deadline = time.monotonic() + 60
                while not absent.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
                held.rename(last)
                put_back.set()

            threading.Thread(target=watch, daemon=True).start()

        with pytest.raises(RestoreFailed) as err:
            count_rows(docker_settings(settings_factory, f"file://{repo}", docker_mode=mode),
                       Hooks(after_start=after_start))
        assert put_back.is_set()
        assert err.value.result.outcome == "TRUNCATED"
        assert "segment(s) were not replayed" in str(err.value)
        assert any("redo done at" in line for line in err.value.result.log_tail)  # the server log came along
    finally:
        import shutil

        shutil.rmtree(repo, ignore_errors=True)


# -- the container dies mid-recovery --------------------------------------------------------------
@pytest.mark.parametrize("mode", BIND_COPY)
def test_twin_container_killed_mid_recovery_fails_and_leaves_nothing(pg15, settings_factory, docker_client, mode):
    killed = []

    def kill_once_recovering(server):
        def kill():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and b"starting archive recovery" not in server.container.container.logs():
                time.sleep(0.02)
            server.container.container.kill()  # SIGKILL: no shutdown at all
            killed.append(server.name)

        threading.Thread(target=kill, daemon=True).start()

    with pytest.raises(RestoreFailed) as err:
        count_rows(docker_settings(settings_factory, pg15.file_url, docker_mode=mode),
                   Hooks(after_start=kill_once_recovering))
    assert killed
    assert err.value.result.outcome == "START_FAILED"
    assert "exit code 137" in str(err.value)


# -- the harness SIGKILLed mid-drill ---------------------------------------------------------------
_HARNESS = """
import sys, time
from pytest_pgrestore.settings._options import resolve_settings
from pytest_pgrestore.restore._instance import Hooks
from pytest_pgrestore.restore._restorer import Restorer

source, workdir, late = sys.argv[1:4]
settings = resolve_settings(cli={{"source": source, "workdir": workdir, "runtime": "docker",
                                  "docker_network": "host", "docker_mode": "{mode}"}}, env={{}}, ini={{}})

def hold(name):
    if name == late:
        print("HOLDING", flush=True)
        time.sleep(3600)

with Restorer(settings, hooks=Hooks(before_deliver=hold)).restore():
    pass
"""


@pytest.mark.parametrize("mode", BIND_COPY)
def test_sigkilled_harness_leaves_a_container_the_next_run_removes(pg15, settings_factory, workroot,
                                                                   docker_client, mode):
    late = newest_segment(pg15.repo).name
    child = subprocess.Popen([sys.executable, "-c", _HARNESS.format(mode=mode), pg15.file_url,
                              str(workroot / "runs"), late], stdout=subprocess.PIPE, text=True)
    concurrent = docker_client.containers.create(  # a live run's container (this process is alive)
        "postgres:15", entrypoint=["sleep", "600"], labels=run_labels("r-concurrent", workroot / "nowhere",
                                                                      lifetime=3600))
    try:
        assert child.stdout.readline().strip() == "HOLDING"
        # the spool may hold the segment back before the container is up (WAL is prefetched while
        # the base backup arrives): the kill comes once the container runs (bind: replay waits for
        # that segment; copy: the harness waits for it before staging)
        deadline = time.monotonic() + 60
        while not (running := docker_client.containers.list(filters={"label": f"{LABEL}.pid={child.pid}"})):
            assert time.monotonic() < deadline, "the harness never started its container"
            time.sleep(0.1)
        (leftover,) = running
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # the supervisor notices the silent heartbeat (or the wrapper does, and postgres aborts)
        import docker.errors

        try:
            leftover.wait(timeout=60)
            leftover.reload()
            status, logs = leftover.status, leftover.logs().decode()
        except docker.errors.APIError:  # NotFound, or 409 "marked for removal"
            status = logs = None  # another run (an xdist worker) swept it first: the rule at work too
        if status is not None:
            assert status == "exited"
            assert "heartbeat stopped" in logs or "exit code 204" in logs
        # the next run sweeps it, and only it
        rows, result = count_rows(docker_settings(settings_factory, pg15.file_url))
        assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
        assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL}.pid={child.pid}"})
        concurrent.reload()
        assert concurrent.status == "created"
    finally:
        if child.poll() is None:
            child.kill()
        concurrent.remove(force=True)
    assert os.getpid() != child.pid


# -- a daemon that does not see our files (GitLab's docker:dind) -----------------------------------
@pytest.fixture(scope="module")
def foreign_daemon(docker_client):
    """A second dockerd sharing our network but with its own /tmp, and a postgres:15 of its own."""
    import shutil

    from docker_support import Dockerd, build_images

    root = Path(f"/var/tmp/pgr-dockerd-foreign-{os.getpid()}")
    daemon = Dockerd(root, foreign_tmp=True, bridge_ip="10.214.0.1/24")
    try:
        daemon.start()
        build_images(daemon.host, [15])
        yield daemon
        import docker

        client = docker.DockerClient(base_url=daemon.host)
        assert our_containers(client) == []
        client.close()
    finally:
        daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_auto_copies_when_the_daemon_cannot_see_our_files(pg15, settings_factory, foreign_daemon, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", foreign_daemon.host)
    rows, result = count_rows(docker_settings(settings_factory, pg15.file_url, docker_mode="auto"))
    assert (rows, result.outcome) == (pg15.total_rows, "REACHED")
    assert "copy transfer" in result.evidence["runtime_detail"]


def test_twin_bind_when_the_daemon_cannot_see_our_files_says_to_copy(pg15, settings_factory, foreign_daemon,
                                                                    monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", foreign_daemon.host)
    with pytest.raises(PgRestoreError) as err:
        count_rows(docker_settings(settings_factory, pg15.file_url, docker_mode="bind"))
    assert "the Docker daemon cannot bind-mount the run dir" in str(err.value)
    assert "--restore-docker-mode=copy" in err.value.fix
