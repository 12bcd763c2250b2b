"""Bounded extraction and hostile tars against a real pg_basebackup backup (issue 19, items 4, 5).

Each damaged source is a private copy of the pg15 scenario's archive (real ``pg_basebackup``
output, served from a real local directory) with one object replaced, next to its twin: the same
object rebuilt intact restores REACHED.

* a decompression bomb: ``base.tar`` replaced by a ``base.tar.zst`` of a few hundred KB holding
  the real members and then 2 GiB of zeros; the restore fails naming the object and the member,
  and what it wrote stays inside the disk pre-flight's reservation;
* a WAL object that decodes to a segment and 1 MiB more fails naming it (RESTORE_COMMAND_ABORT);
* hostile shapes through ``pgrestore restore``: exit 1, the object and the member named, no
  traceback.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from bomb_support import MiB, Zeros
from it_support import copy_repo, run_dirs

from pytest_pgrestore.errors import CorruptBackup, RestoreFailed
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

BOMB_MEMBERS, BOMB_EACH = 256, 8 * MiB  # 2 GiB of zeros


def _rewrite_zst(base_tar: Path, *, first: list[tuple[tarfile.TarInfo, object]] = (), bomb: bool = False) -> Path:
    """``base.tar`` → ``base.tar.zst`` (the original removed): ``first`` members, the real ones,
    then (``bomb``) 2 GiB of zero-filled relation files, compressed by zstandard as written."""
    out_path = base_tar.with_name("base.tar.zst")
    with (
        open(out_path, "wb") as raw,
        zstandard.ZstdCompressor(level=3).stream_writer(raw) as comp,
        tarfile.open(fileobj=comp, mode="w|", format=tarfile.GNU_FORMAT) as out,
        tarfile.open(base_tar) as src,
    ):
        for info, data in first:
            out.addfile(info, data)  # type: ignore[arg-type]
        for m in src.getmembers():
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        if bomb:
            for i in range(BOMB_MEMBERS):
                info = tarfile.TarInfo(f"base/5/{900000 + i}")
                info.size, info.mode = BOMB_EACH, 0o600
                out.addfile(info, Zeros(BOMB_EACH))
    base_tar.unlink()
    return out_path


@pytest.fixture
def repo(pg15, workroot) -> Iterator[Path]:
    path = copy_repo(pg15, workroot / f"bounded-{os.getpid()}-{os.urandom(3).hex()}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _base_tar(repo: Path, pg15) -> Path:
    return repo / "basebackups" / pg15.backups["b2"].name / "base.tar"


def _du(path: Path) -> int:
    """Bytes of the files under ``path`` as allocated on disk (sparse files count what they hold)."""
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# -- the decompression bomb ----------------------------------------------------------------------
def test_a_decompression_bomb_fails_naming_the_object_within_the_reservation(repo, pg15, settings_factory,
                                                                              workroot):
    bomb = _rewrite_zst(_base_tar(repo, pg15), bomb=True)
    assert bomb.stat().st_size < 8 * MiB  # ~3 MiB of real data and 2 GiB of zeros
    runs = workroot / "runs"
    before = {p.name for p in runs.iterdir()} if runs.exists() else set()
    free_before = shutil.disk_usage(workroot).free
    with pytest.raises(CorruptBackup) as err:
        with Restorer(settings_factory(f"file://{repo}", "immediate", keep="on-failure")).restore():
            pass
    message = str(err.value)
    key = f"basebackups/{pg15.backups['b2'].name}/base.tar.zst"
    assert message.startswith(f"{key}: member 'base/5/9"), message
    assert "the disk pre-flight reserved for the backup's files" in message
    assert "the sum of Size in" in message  # where the reservation's figure comes from
    assert "Traceback" not in message and "No space left" not in message
    kept = [p for p in runs.iterdir() if p.name not in before]
    try:
        assert len(kept) == 1, kept  # kept on failure: what was written is measured
        reserved, spool = _mib(message, r"pass the ([\d.]+) MiB"), _mib(message, r"WAL spool window \(([\d.]+) MiB")
        assert _du(kept[0] / "pgdata") <= reserved  # extraction stayed inside its reservation
        assert _du(kept[0]) <= reserved + spool  # and the run dir inside the pre-flight's whole figure
        assert _du(kept[0]) < 200 * MiB  # far from the 2 GiB the object expands to
        assert free_before - shutil.disk_usage(workroot).free < 200 * MiB
    finally:
        for p in kept:
            shutil.rmtree(p, ignore_errors=True)


def _mib(message: str, pattern: str) -> int:
    """A figure of the message in MiB (one decimal), as bytes rounded up."""
    import re

    m = re.search(pattern, message)
    assert m, message
    return int((float(m.group(1)) + 0.1) * MiB)


def test_twin_the_same_backup_intact_as_zstd_restores(repo, pg15, settings_factory, workroot):
    _rewrite_zst(_base_tar(repo, pg15))
    with Restorer(settings_factory(f"file://{repo}", "immediate")).restore() as inst:
        assert inst.result.outcome == "REACHED"
        assert inst.result.evidence["manifest_check"]
    assert run_dirs(workroot) == []


# -- a WAL object bigger than a segment -------------------------------------------------------------
def _newest_segment(repo: Path) -> Path:
    return max(p for p in (repo / "wal").iterdir() if len(p.name) == 24)


def _as_zst(segment: Path, extra: int) -> str:
    data = segment.read_bytes() + bytes(extra)
    segment.with_name(segment.name + ".zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    segment.unlink()
    return segment.name


def test_a_wal_object_decoding_past_the_segment_size_fails_naming_it(repo, settings_factory, workroot):
    name = _as_zst(_newest_segment(repo), 1 * MiB)
    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(f"file://{repo}")).restore():
            pass
    message = str(err.value)
    assert err.value.result.outcome == "RESTORE_COMMAND_ABORT", message
    assert f"wal/{name}.zst: WAL file {name} decodes to more than the WAL segment size (16.0 MiB" in message
    assert run_dirs(workroot) == []


def test_twin_a_wal_object_of_the_segment_size_restores(repo, settings_factory, workroot):
    _as_zst(_newest_segment(repo), 0)
    with Restorer(settings_factory(f"file://{repo}")).restore() as inst:
        assert inst.result.outcome == "REACHED"
    assert run_dirs(workroot) == []


# -- hostile shapes, end to end through pgrestore -----------------------------------------------------
def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o600
    return info, io.BytesIO(data) if data else None


HOSTILE = {
    "file-then-dir": ([_member("pg_notify"), _member("pg_notify", tarfile.DIRTYPE)],
                      "member 'pg_notify' is a directory, but an earlier member made 'pg_notify' a regular file"),
    "member-under-a-file": ([_member("pg_evil", data=b"x"), _member("pg_evil/inside", data=b"y")],
                            "member 'pg_evil/inside' lies under 'pg_evil', which an earlier member made a regular file"),
    "tblspc-link-beside-a-directory": (
        [_member("pg_tblspc/16999", tarfile.DIRTYPE), _member("pg_tblspc/16999", tarfile.SYMTYPE, link="/srv/ts")],
        "member 'pg_tblspc/16999' is a symbolic link, but an earlier member made 'pg_tblspc/16999' a directory"),
    "300-character-name": ([_member("global/" + "n" * 300, data=b"x")],
                           "has a name of 300 bytes, longer than the 255 a file name may have"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_through_the_cli_exits_1_naming_object_and_member(case, repo, pg15, workroot):
    first, says = HOSTILE[case]
    _rewrite_zst(_base_tar(repo, pg15), first=first)
    pgdata = workroot / f"cli-hostile-{case}-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    env["PGRESTORE_WORKDIR"] = str(workroot / "runs")
    out = subprocess.run([sys.executable, "-m", "pytest_pgrestore.cli", "restore", f"file://{repo}",
                          "--pgdata", str(pgdata), "--target", "immediate"],
                         capture_output=True, text=True, env=env, timeout=300)
    try:
        assert out.returncode == 1, out.stderr
        assert f"basebackups/{pg15.backups['b2'].name}/base.tar.zst: " in out.stderr, out.stderr
        assert says in out.stderr
        assert "Traceback" not in out.stderr and "internal error" not in out.stderr
        assert run_dirs(workroot) == []
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)


def test_twin_the_same_archive_rewritten_without_the_hostile_members_restores_through_the_cli(repo, pg15,
                                                                                              workroot):
    _rewrite_zst(_base_tar(repo, pg15))
    pgdata = workroot / f"cli-hostile-twin-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    env["PGRESTORE_WORKDIR"] = str(workroot / "runs")
    out = subprocess.run([sys.executable, "-m", "pytest_pgrestore.cli", "restore", f"file://{repo}",
                          "--pgdata", str(pgdata), "--target", "immediate"],
                         capture_output=True, text=True, env=env, timeout=300)
    try:
        assert out.returncode == 0, out.stderr
        assert ": REACHED" in out.stdout
    finally:
        shutil.rmtree(pgdata, ignore_errors=True)
