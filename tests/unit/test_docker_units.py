"""The docker runtime's pure parts and shell scripts, without a Docker daemon.

The container supervisor and the heartbeat flavour of the restore_command wrapper are real
/bin/sh scripts: they run here against real files and real processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_pgrestore.errors import UsageError
from pytest_pgrestore.restore._spool import write_wrapper
from pytest_pgrestore.runtimes._container import SUPERVISOR
from pytest_pgrestore.runtimes._docker import scram_verifier
from pytest_pgrestore.runtimes._docker_sweep import LABEL, is_leftover, process_start, run_labels
from pytest_pgrestore.settings._options import resolve_settings

SEGMENT = "000000010000000000000005"


# -- options ---------------------------------------------------------------------------------------
def test_docker_defaults():
    s = resolve_settings(cli={}, env={}, ini={})
    assert (s.image, s.docker_network, s.docker_mode) == ("postgres:{major}", "bridge", "auto")


@pytest.mark.parametrize("image", ["postgres:{major}", "registry.example.com:5000/pg/postgres:{major}-alpine",
                                   "postgres@sha256:abc", "my-pg"])
def test_image_accepts_references_with_the_major_placeholder(image):
    assert resolve_settings(cli={"image": image}, env={}, ini={}).image == image


@pytest.mark.parametrize("image", ["postgres:{version}", "postgres:{major", "post gres", "", "{major}}"])
def test_image_refuses_other_placeholders_and_junk(image):
    with pytest.raises(UsageError) as err:
        resolve_settings(cli={"image": image}, env={}, ini={})
    assert "(from --restore-image)" in str(err.value)


def test_image_from_env_names_its_source():
    with pytest.raises(UsageError) as err:
        resolve_settings(cli={}, env={"PGRESTORE_IMAGE": "pg:{minor}"}, ini={})
    assert "(from env PGRESTORE_IMAGE)" in str(err.value)


# -- the SCRAM secret set in copy mode ----------------------------------------------------------------
def test_scram_verifier_is_what_postgres_stores():
    secret = scram_verifier("correct horse")
    method, rest = secret.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"correct horse", base64.b64decode(salt), int(iterations))
    assert method == "SCRAM-SHA-256" and int(iterations) == 4096
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert server == hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    assert scram_verifier("correct horse") != secret  # a fresh salt each time


# -- labels and the sweep rule -------------------------------------------------------------------
def labels_for(pid: int, **changes: str) -> dict[str, str]:
    labels = run_labels("r-x", Path("/tmp/x"), lifetime=3600)
    labels[f"{LABEL}.pid"] = str(pid)
    labels[f"{LABEL}.pid-start"] = process_start(pid) or "1"
    labels.update({f"{LABEL}.{k}": v for k, v in changes.items()})
    return labels


def test_a_live_harness_keeps_its_container():
    assert is_leftover(labels_for(os.getpid())) is None


def test_a_dead_harness_leaves_a_leftover():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert is_leftover(labels_for(proc.pid)) == f"its harness (pid {proc.pid}) is gone"


def test_a_reused_pid_is_not_the_harness():
    why = is_leftover(labels_for(os.getpid(), **{"pid-start": "1"}))
    assert why == f"its harness's pid {os.getpid()} now belongs to another process"


def test_another_boot_waits_for_the_expiry():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert is_leftover(labels_for(proc.pid, **{"boot-id": "another-boot"})) is None
    expired = labels_for(proc.pid, **{"boot-id": "another-boot", "expires": str(int(time.time()) - 1)})
    assert is_leftover(expired) == "its expiry passed"


# -- the wrapper's heartbeat flavour ---------------------------------------------------------------
@pytest.fixture
def spool(tmp_path: Path) -> Path:
    (tmp_path / "spool" / "req").mkdir(parents=True)
    return tmp_path / "spool"


def run_wrapper(script: Path, dest: Path, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", f'"{script}" "$0" "$1"', SEGMENT, str(dest)],
                          capture_output=True, text=True, timeout=timeout)


def test_heartbeat_wrapper_does_not_look_at_pids(tmp_path, spool):
    text = write_wrapper(tmp_path / "w.sh", spool, None, max_wait_s=5, heartbeat=tmp_path / "hb").read_text()
    assert "/proc/" not in text
    assert "hb=" in text


def test_heartbeat_wrapper_gives_up_when_the_heartbeat_stops(tmp_path, spool):
    (tmp_path / "hb").write_text("7\n")
    script = write_wrapper(tmp_path / "w.sh", spool, None, max_wait_s=60, heartbeat=tmp_path / "hb", stale_s=0.5)
    started = time.monotonic()
    proc = run_wrapper(script, tmp_path / "RECOVERYXLOG")
    assert proc.returncode == 204
    assert time.monotonic() - started < 10
    assert (spool / "req" / SEGMENT).exists()  # it did ask first


def test_heartbeat_wrapper_waits_while_the_heartbeat_moves(tmp_path, spool):
    hb = tmp_path / "hb"
    script = write_wrapper(tmp_path / "w.sh", spool, None, max_wait_s=60, heartbeat=hb, stale_s=0.5)
    proc = subprocess.Popen(["/bin/sh", str(script), SEGMENT, str(tmp_path / "RECOVERYXLOG")])
    for beat in range(15):  # 1.5 s: three times the stale limit
        hb.write_text(f"{beat}\n")
        time.sleep(0.1)
    assert proc.poll() is None
    (spool / SEGMENT).write_bytes(b"wal")
    assert proc.wait(10) == 0
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == b"wal"


def test_a_ready_file_wins_over_a_dead_heartbeat(tmp_path, spool):
    (spool / SEGMENT).write_bytes(b"wal")
    script = write_wrapper(tmp_path / "w.sh", spool, None, max_wait_s=5, heartbeat=tmp_path / "never-written")
    assert run_wrapper(script, tmp_path / "RECOVERYXLOG").returncode == 0


def test_wrapper_needs_a_pid_or_a_heartbeat(tmp_path, spool):
    with pytest.raises(ValueError):
        write_wrapper(tmp_path / "w.sh", spool, None, max_wait_s=5)


# -- the container's supervisor, run here with a stand-in for postgres -------------------------------
# Like postgres it installs its own SIGINT handler: an asynchronous command of a non-interactive sh
# starts with SIGINT ignored, which a shell stand-in could not undo.
_POSTGRES = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *a: (print('got INT', flush=True), sys.exit(0)))\n"
             "time.sleep(60)")


def supervisor(run: Path, limit_ticks: int) -> subprocess.Popen:
    (run / "postgres.args").write_text(f"{sys.executable}\n-c\n{_POSTGRES.replace(chr(10), '; ')}\n")
    return subprocess.Popen(["/bin/sh", "-c", SUPERVISOR, "supervisor", str(run), str(run / "heartbeat"),
                             str(limit_ticks)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_supervisor_waits_for_the_go_ahead_then_forwards_sigint(tmp_path):
    (tmp_path / "heartbeat").write_text("1\n")
    sup = supervisor(tmp_path, limit_ticks=1000)
    time.sleep(0.6)
    assert sup.poll() is None  # idle: tools could run now
    (tmp_path / "go").touch()
    time.sleep(0.6)
    sup.send_signal(2)
    out, _ = sup.communicate(timeout=10)
    assert sup.returncode == 0
    assert "got INT" in out


def test_supervisor_stops_postgres_when_the_heartbeat_stops(tmp_path):
    (tmp_path / "heartbeat").write_text("1\n")
    (tmp_path / "go").touch()
    sup = supervisor(tmp_path, limit_ticks=4)  # 4 ticks of 0.25 s
    out, _ = sup.communicate(timeout=15)
    assert "harness heartbeat stopped; stopping postgres" in out
    assert "got INT" in out


def test_supervisor_leaves_a_kept_run_alone(tmp_path):
    (tmp_path / "heartbeat").write_text("1\n")
    (tmp_path / "go").touch()
    (tmp_path / "keep").touch()
    sup = supervisor(tmp_path, limit_ticks=2)
    time.sleep(2)
    assert sup.poll() is None
    sup.send_signal(2)
    sup.communicate(timeout=10)


def test_supervisor_exits_when_the_harness_dies_before_the_go_ahead(tmp_path):
    sup = supervisor(tmp_path, limit_ticks=4)  # no heartbeat file at all
    out, _ = sup.communicate(timeout=15)
    assert "harness heartbeat stopped before start" in out
    assert sup.returncode == 0
