"""No credential reaches any output of a drill run, nor the restored server's environment.

An inner pytest run is configured with every kind of credential the product handles: the AWS
secret key (read-only identity), WAL-G's libsodium key (the backup is encrypted with it), a
``PGPASSWORD``, an alert webhook URL whose path is a token — and it learns the restored
server's per-run password from the DSN it hands out.  One restore passes, one fails on a
damaged encrypted object (so error paths print too).  Then every output is searched: the
terminal, the log file (DEBUG, botocore's included), JUnit XML, the HTML report, the JSON evidence, and
``/proc/<pid>/environ`` of the postmaster and its supervisor.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest
from walg_writer import WalgSource

pytestmark = pytest.mark.integration

KEY = secrets.token_bytes(32)
BUCKET = "secrets"

DRILLS = """
import os
from pathlib import Path

import pytest

OUT = Path({out!r})


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{{pid}}/environ").read_bytes()


def test_drill(restored_postgres, restored_db):
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {rows}
    OUT.joinpath("dsn").write_text(restored_postgres.dsn)
    run_dir = restored_postgres.run_dir
    from pytest_pgrestore.runtimes._local import find_postmaster

    supervisor = int((run_dir / "supervisor.pid").read_text())
    postmaster = find_postmaster(supervisor, os.stat(run_dir / "pgdata").st_uid)
    OUT.joinpath("postmaster.environ").write_bytes(_environ(postmaster))
    OUT.joinpath("supervisor.environ").write_bytes(_environ(supervisor))


@pytest.mark.restore_target("latest", source="s3://{bucket}/damaged")
def test_damaged(restored_db):
    pass
"""


@pytest.fixture(scope="module")
def encrypted(pg15, seaweed, workroot):
    """The pg15 history as a WAL-G layout encrypted with libsodium, intact and with one flipped byte."""
    src = WalgSource(
        workroot / "secrets-walg", pg15.repo, [pg15.backups["b1"], pg15.backups["b2"]], pg15.commits, ""
    )
    seaweed.create_bucket(BUCKET)
    for name in ("intact", "damaged"):
        out = workroot / "secrets-walg" / name
        _, pushed = src.layout(out, backups=(1,), method="lz4", key=KEY)
        if name == "damaged":
            part = next((out / "basebackups_005" / pushed[-1].name / "tar_partitions").glob("part_001.tar*"))
            data = bytearray(part.read_bytes())
            data[len(data) // 2] ^= 0x20
            part.write_bytes(bytes(data))
        seaweed.upload_dir(out, BUCKET, name)
    return f"s3://{BUCKET}/intact"


def test_no_credential_in_any_output_nor_in_the_servers_environment(
    pytester, pg15, seaweed, encrypted, workroot
):
    out = workroot / "secrets-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    env = seaweed.env(readonly=True)
    token = secrets.token_urlsafe(24)
    pgpassword = secrets.token_urlsafe(16)
    inner_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WALG_", "PG"))},
        **env,
        "WALG_LIBSODIUM_KEY": KEY.hex(),
        "WALG_LIBSODIUM_KEY_TRANSFORM": "hex",
        "PGPASSWORD": pgpassword,
        "COLUMNS": "300",
    }
    pytester.makepyfile(test_drills=DRILLS.format(out=str(out), rows=pg15.total_rows, bucket=BUCKET))
    argv = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-v", "--tb=long", "--showlocals",
        f"--restore-source={encrypted}", f"--restore-workdir={workroot / 'secrets-runs'}",
        f"--junitxml={out / 'junit.xml'}", f"--html={out / 'report.html'}", "--self-contained-html",
        f"--restore-report={out / 'evidence.json'}", f"--log-file={out / 'run.log'}", "--log-file-level=DEBUG",
        "--log-level=INFO", f"--restore-alert-webhook=http://127.0.0.1:9/hooks/{token}",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=pytester.path, env=inner_env, capture_output=True, text=True, timeout=300)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode == 1, terminal  # the damaged twin fails; the drill passes
    assert "PASSED test_drills.py::test_drill" in terminal
    assert "FAILED test_drills.py::restore[latest]" in terminal and "libsodium MAC" in terminal

    dsn_password = dict(p.split("=", 1) for p in (out / "dsn").read_text().split())["password"]
    credentials = {
        "AWS secret key": env["AWS_SECRET_ACCESS_KEY"],
        "libsodium key (hex)": KEY.hex(),
        "PGPASSWORD": pgpassword,
        "webhook token": token,
        "per-run DSN password": dsn_password,
    }
    outputs = {"terminal": terminal.encode()}
    for name in ("run.log", "junit.xml", "report.html", "evidence.json"):
        assert (out / name).stat().st_size > 0, name
        outputs[name] = (out / name).read_bytes()
    for name in ("postmaster.environ", "supervisor.environ"):
        outputs[name] = (out / name).read_bytes()
    found = [
        f"{what} in {where}"
        for where, data in outputs.items()
        for what, value in credentials.items()
        if value.encode() in data
    ]
    found += [f"libsodium key (raw) in {where}" for where, data in outputs.items() if KEY in data]
    assert found == []
    # the access key id is not a secret, but we never print it (botocore's own DEBUG request logs
    # do: the Authorization header names it, so run.log is left out here)
    for where in ("terminal", "junit.xml", "report.html", "evidence.json"):
        i = outputs[where].find(env["AWS_ACCESS_KEY_ID"].encode())
        assert i < 0, (where, outputs[where][i - 300 : i + 100])
    for name in ("postmaster.environ", "supervisor.environ"):
        names = sorted(v.split(b"=", 1)[0].decode() for v in outputs[name].split(b"\0") if v)
        assert set(names) <= {"LANG", "LC_ALL", "PATH", "TZ", "PWD"}, (name, names)  # PWD: set by /bin/sh
