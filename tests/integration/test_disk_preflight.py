"""Disk pre-flight: a restore that cannot fit is refused before the download, naming both sizes.

Each side runs with ``--restore-workdir`` on a tmpfs of its own: 20 MiB (too small for the backup
plus the WAL spool window) and 256 MiB (enough).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from it_support import our_postgres_processes

from pytest_pgrestore.restore._diskcheck import DiskSpaceError
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture
def tmpfs(workroot):
    mounted = []

    def mount(size: str) -> Path:
        path = workroot / f"tmpfs-{size}-{os.getpid()}"
        path.mkdir(mode=0o755)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            path.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def test_twin_too_small_a_workdir_is_refused_before_download(pg15, settings_factory, tmpfs, workroot):
    small = tmpfs("20m")
    settings = settings_factory(pg15.s3_url, env=pg15.s3_env, workdir=str(small / "runs"))
    with pytest.raises(DiskSpaceError) as err:
        with Restorer(settings).restore():
            pass
    message = str(err.value)
    assert message.startswith(
        f"not enough free disk space for the restore: {small} has 20.0 MiB free, the restore needs "
    )
    assert f"backup {pg15.backups['b2'].name} uncompressed " in message
    assert "(the sum of Size in basebackups/" in message and "WAL spool window" in message
    assert "--restore-workdir" in message
    result = err.value.result
    assert (result.outcome, result.bytes_fetched) == ("REFUSED_PREFLIGHT", 0)
    assert not (small / "runs").exists() or not any((small / "runs").iterdir())  # nothing was started there
    assert our_postgres_processes(workroot) == []


def test_a_workdir_with_room_restores(pg15, settings_factory, tmpfs):
    roomy = tmpfs("256m")
    settings = settings_factory(pg15.s3_url, env=pg15.s3_env, workdir=str(roomy / "runs"))
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == pg15.total_rows
        assert inst.result.outcome == "REACHED"
        assert "needed (backup " in inst.result.evidence["disk_check"]
        assert f"free in {roomy / 'runs'}" in inst.result.evidence["disk_check"]
