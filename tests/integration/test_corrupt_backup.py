"""A flipped byte inside the base backup is caught by the manifest check, before any replay."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
from it_support import copy_repo, run_dirs

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture
def repo_copy(pg15):
    repo = copy_repo(pg15, Path(f"/tmp/pgr-corrupt-{os.getpid()}"))
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def flip_a_data_byte(base_tar: Path) -> str:
    """Flip one byte in the payload of the largest relation file; returns the member name."""
    with tarfile.open(base_tar) as tar:
        member = max((m for m in tar.getmembers() if m.isfile() and m.name.startswith("base/")),
                     key=lambda m: m.size)
    with open(base_tar, "r+b") as f:
        f.seek(member.offset_data + member.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    return member.name


def test_intact_copy_restores(repo_copy, settings_factory):
    with Restorer(settings_factory(f"file://{repo_copy}", "immediate")).restore() as inst:
        assert inst.result.evidence["manifest_check"]


def test_twin_flipped_byte_fails_the_manifest_check(repo_copy, settings_factory, workroot, pg15):
    name = flip_a_data_byte(repo_copy / "basebackups" / pg15.backups["b2"].name / "base.tar")
    with pytest.raises(CorruptBackup) as err:
        with Restorer(settings_factory(f"file://{repo_copy}", "immediate")).restore():
            pass
    message = str(err.value)
    assert "do not match the backup's manifest" in message
    assert name in message  # pg_verifybackup names the damaged file
    assert run_dirs(workroot) == []
