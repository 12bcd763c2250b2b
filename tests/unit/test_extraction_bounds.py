"""Bounded extraction and hostile tar shapes (issue 19, items 4 and 5).

Real tars (``tarfile``) compressed by the real ``zstandard`` codec, read back through the
product's decoders and ``extract_tar``/``extract_tars`` from a real local directory store.  Each
case has its twin: the same archive made valid extracts without complaint.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard
from bomb_support import MiB, Zeros

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.formats._codecs import extract_tar, open_decompressed
from pytest_pgrestore.formats._tar_materialize import TarObject, extract_tars, link_tablespaces, reserve
from pytest_pgrestore.formats._walg_tar import LevelFilter, extract_walg_tar
from pytest_pgrestore.restore._diskcheck import Need, reservation
from pytest_pgrestore.restore._spool import WalSpool, write_wrapper
from pytest_pgrestore.store._local import LocalStore


def make_tar(*members: tuple[str, str, object]) -> bytes:
    """Members as (name, kind, data): "f" a file (bytes, or an int: that many zero bytes, streamed),
    "d" a directory, "l" a symlink (data: its target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o600
            if kind == "f":
                if isinstance(data, int):
                    info.size = data
                    tar.addfile(info, Zeros(data))
                else:
                    assert isinstance(data, bytes)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            elif kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
    return buf.getvalue()


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def zst_bomb_tar(members: int, each: int) -> bytes:
    """A tar of ``members`` files of ``each`` zero bytes, zstd-compressed as it is written: a few
    KB standing for members × each bytes, never held whole in memory."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as comp:
        with tarfile.open(fileobj=comp, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for i in range(members):
                info = tarfile.TarInfo(f"base/1/{16384 + i}")
                info.size, info.mode = each, 0o600
                tar.addfile(info, Zeros(each))
    return out.getvalue()


def extract(data: bytes, dest: Path, **kw) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    with open_decompressed(io.BytesIO(zst(data)), "base.tar.zst") as stream:
        return extract_tar(stream, dest, label="base.tar.zst", on_symlink=lambda rel, target: None, **kw)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# -- item 5: hostile shapes, each with its twin ----------------------------------------------------
HOSTILE = {
    "file-then-dir": ([("PG_VERSION", "f", b"15\n"), ("global", "f", b"x"), ("global", "d", None)],
                      [("PG_VERSION", "f", b"15\n"), ("global", "d", None)],
                      "member 'global' is a directory, but an earlier member made 'global' a regular file"),
    "dir-then-file": ([("global", "d", None), ("global", "f", b"x")],
                      [("global", "d", None), ("global/pg_control", "f", b"x")],
                      "member 'global' is a regular file, but an earlier member made 'global' a directory"),
    "member-under-a-file": ([("base", "f", b"x"), ("base/1/1259", "f", b"page")],
                            [("base", "d", None), ("base/1/1259", "f", b"page")],
                            "member 'base/1/1259' lies under 'base', which an earlier member made a regular file"),
    "tblspc-link-beside-a-directory": (
        [("pg_tblspc", "d", None), ("pg_tblspc/16385", "d", None), ("pg_tblspc/16385", "l", "/srv/ts")],
        [("pg_tblspc", "d", None), ("pg_tblspc/16385", "l", "/srv/ts")],
        "member 'pg_tblspc/16385' is a symbolic link, but an earlier member made 'pg_tblspc/16385' a directory"),
    "300-character-name": ([("base/1/" + "n" * 300, "f", b"x")],
                           [("base/1/" + "n" * 255, "f", b"x")],
                           "has a name of 300 bytes, longer than the 255 a file name may have"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_shape_is_a_named_corrupt_backup(case, tmp_path):
    hostile, _, message = HOSTILE[case]
    with pytest.raises(CorruptBackup) as err:
        extract(make_tar(*hostile), tmp_path / "pgdata")
    text = str(err.value)
    assert text.startswith("base.tar.zst: member "), text  # the object, then the member
    assert message in text
    assert "checked:" in text and "fix:" in text


@pytest.mark.parametrize("case", list(HOSTILE))
def test_twin_the_valid_shape_extracts(case, tmp_path):
    _, valid, _ = HOSTILE[case]
    extract(make_tar(*valid), tmp_path / "pgdata")
    for name, kind, _data in valid:
        path = tmp_path / "pgdata" / name
        if kind == "f":
            assert path.is_file()
        elif kind == "d":
            assert path.is_dir()


def test_a_long_name_is_shortened_in_the_message(tmp_path):
    with pytest.raises(CorruptBackup) as err:
        extract(make_tar(("n" * 300, "f", b"x")), tmp_path / "pgdata")
    assert "(300 characters)" in str(err.value) and "n" * 100 not in str(err.value)


def test_a_file_of_one_object_and_a_directory_of_another_are_named(tmp_path):
    """Two objects of one backup, extracted together into one PGDATA (as WAL-G's parts are)."""
    src = tmp_path / "store"
    src.mkdir()
    (src / "part_1.tar.zst").write_bytes(zst(make_tar(("global", "f", b"x"))))
    (src / "part_2.tar.zst").write_bytes(zst(make_tar(("global/pg_control", "f", b"y"))))
    pgdata = tmp_path / "pgdata"
    objects = [TarObject("part_1.tar.zst", pgdata), TarObject("part_2.tar.zst", pgdata)]
    with pytest.raises(CorruptBackup, match=r"part_2\.tar\.zst: member 'global/pg_control' lies under 'global'"):
        extract_tars(LocalStore(src), objects, workers=1, name="t")


def test_walg_tar_hostile_shape_is_named_and_its_twin_extracts(tmp_path):
    level = LevelFilter(wanted=None, incremented=set(), skip=set())
    bad = make_tar(("/", "d", None), ("/base", "f", b"x"), ("/base/1/1259", "f", b"page"))
    with pytest.raises(CorruptBackup, match=r"part_001\.tar: member '/base/1/1259' lies under 'base'"):
        extract_walg_tar(io.BytesIO(bad), tmp_path / "a", label="part_001.tar", level=level, owner=None,
                         block_size=8192)
    good = make_tar(("/", "d", None), ("/base", "d", None), ("/base/1/1259", "f", b"page"))
    extract_walg_tar(io.BytesIO(good), tmp_path / "b", label="part_001.tar", level=level, owner=None,
                     block_size=8192)
    assert (tmp_path / "b/base/1/1259").read_bytes() == b"page"


def test_a_directory_where_the_tablespace_link_goes_is_named(tmp_path):
    pgdata = tmp_path / "pgdata"
    (pgdata / "pg_tblspc/16385").mkdir(parents=True)  # what a hostile base.tar left
    with pytest.raises(CorruptBackup, match="made pg_tblspc/16385 a directory, where the link to tablespace 16385"):
        link_tablespaces(pgdata, {"16385": tmp_path / "ts/16385"})


def test_twin_the_tablespace_link_is_made(tmp_path):
    pgdata = tmp_path / "pgdata"
    (pgdata / "pg_tblspc").mkdir(parents=True)
    link_tablespaces(pgdata, {"16385": tmp_path / "ts/16385"})
    assert os.readlink(pgdata / "pg_tblspc/16385") == str(tmp_path / "ts/16385")


# -- item 4: a backup that expands past what it declares -------------------------------------------
def _store_with(tmp_path: Path, data: bytes) -> LocalStore:
    src = tmp_path / "store"
    src.mkdir()
    (src / "base.tar.zst").write_bytes(data)
    return LocalStore(src)


def test_a_bomb_stops_at_the_reservation_naming_object_and_member(tmp_path):
    bomb = zst_bomb_tar(members=64, each=32 * MiB)  # 2 GiB of zeros in a few hundred KB
    assert len(bomb) < 1 * MiB
    store = _store_with(tmp_path, bomb)
    work = tmp_path / "work"
    reserve(40 * MiB, "backup b uncompressed 20.0 MiB (test) + WAL spool window 16.0 MiB + 10%", [work])
    try:
        with pytest.raises(CorruptBackup) as err:
            extract_tars(store, [TarObject("base.tar.zst", work / "run/pgdata")], workers=2, name="t")
    finally:
        reserve(None)
    text = str(err.value)
    assert text.startswith("base.tar.zst: member 'base/1/16385' declares 32.0 MiB"), text
    assert "pass the 40.0 MiB the disk pre-flight reserved for the backup's files (32.0 MiB already written)" in text
    assert "backup b uncompressed 20.0 MiB (test)" in text
    assert du(work) <= 40 * MiB  # what was written stayed within the reservation


def test_twin_a_backup_within_its_reservation_extracts(tmp_path):
    store = _store_with(tmp_path, zst_bomb_tar(members=2, each=16 * MiB))
    work = tmp_path / "work"
    reserve(40 * MiB, "test", [work])
    try:
        fetched, written = extract_tars(store, [TarObject("base.tar.zst", work / "run/pgdata")], workers=2, name="t")
    finally:
        reserve(None)
    assert written == 32 * MiB == du(work)


def test_one_absurd_member_fails_at_its_header_before_any_byte(tmp_path):
    store = _store_with(tmp_path, zst_bomb_tar(members=1, each=4 << 30))  # one 4 GiB member
    work = tmp_path / "work"
    reserve(40 * MiB, "test", [work])
    try:
        started = time.monotonic()
        with pytest.raises(CorruptBackup, match=r"member 'base/1/16384' declares 4\.0 GiB"):
            extract_tars(store, [TarObject("base.tar.zst", work / "pgdata")], workers=1, name="t")
    finally:
        reserve(None)
    assert du(work) == 0
    assert time.monotonic() - started < 10  # refused at the header, not after decoding 4 GiB


def test_a_reservation_does_not_bound_extractions_elsewhere(tmp_path):
    store = _store_with(tmp_path, zst_bomb_tar(members=2, each=16 * MiB))
    reserve(1 * MiB, "test", [tmp_path / "work"])
    try:
        _, written = extract_tars(store, [TarObject("base.tar.zst", tmp_path / "other")], workers=1, name="t")
    finally:
        reserve(None)
    assert written == 32 * MiB


def test_an_object_past_its_declared_size_is_named(tmp_path):
    store = _store_with(tmp_path, zst_bomb_tar(members=3, each=1 * MiB))
    with pytest.raises(CorruptBackup, match=r"base\.tar\.zst: member 'base/1/16386' declares 1\.0 MiB .*more than "
                                            r"the object declares it holds \(2\.5 MiB"):
        extract_tars(store, [TarObject("base.tar.zst", tmp_path / "pgdata", max_bytes=5 * MiB // 2)],
                     workers=1, name="t")
    # twin: declared at its size
    _, written = extract_tars(store, [TarObject("base.tar.zst", tmp_path / "pgdata2", max_bytes=3 * MiB)],
                              workers=1, name="t")
    assert written == 3 * MiB


def test_the_reservation_is_the_preflights_figure_unless_only_a_stored_size_is_known():
    need = Need(100 * MiB, "the sum of Size in x/backup_manifest", 32 * MiB, "2 × 16.0 MiB WAL segments")
    # the spool's window is bounded by the spool: extraction gets the rest of what was checked free
    assert reservation(need) == need.on(data=True, spool=True) - 32 * MiB == int(132 * MiB * 1.1) - 32 * MiB
    assert reservation(Need(100, "its stored size (compressed: the real need is larger)", 1, "")) is None
    # WAL-G's UncompressedSize is the sum of its tars' file members (issue 19: read from its source)
    assert reservation(Need(100, "UncompressedSize in the sentinel", 1, "")) == int(101 * 1.1) - 1
    assert reservation(Need(100, "no upper bound: UncompressedSize in the sentinel, which leaves out", 1, "")) is None


# -- item 4: a WAL object bigger than a segment ----------------------------------------------------
SEGMENT = "000000010000000000000003"


class ZstdWal:
    """WAL objects stored zstd-compressed, decoded by the product's codec."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def open_wal(self, key: str):
        return open_decompressed(io.BytesIO(self.files[key]), key)

    def find_wal(self, name: str) -> str | None:
        return None


@dataclass
class _Backup:
    segment_size: int


@dataclass
class _Plan:
    segments: list[str]
    segment_keys: dict[str, str] = field(default_factory=dict)
    backup: _Backup = field(default_factory=lambda: _Backup(16 * MiB))


def _ask(tmp_path: Path, decoded: int) -> tuple[int, WalSpool, Path]:
    key = f"wal_005/{SEGMENT}.zst"
    fmt = ZstdWal({key: zst(bytes(decoded))})
    plan = _Plan([SEGMENT], {SEGMENT: key})
    spool_dir = tmp_path / "spool"
    script = write_wrapper(tmp_path / "restore_wal.sh", spool_dir, os.getpid(), max_wait_s=60)
    dest = tmp_path / "RECOVERYXLOG"
    with WalSpool(fmt, plan, spool_dir, owner=None) as spool:
        rc = subprocess.run(["/bin/sh", str(script), SEGMENT, str(dest)], timeout=30).returncode
        leftovers = [p.name for p in spool_dir.iterdir() if p.name not in ("req", f"{SEGMENT}.error")]
    assert leftovers == []  # the partial file is gone
    return rc, spool, dest


def test_a_wal_object_decoding_past_the_segment_size_fails_naming_it(tmp_path):
    rc, spool, dest = _ask(tmp_path, 16 * MiB + 1 * MiB)
    assert rc == 203  # a hard failure: PostgreSQL aborts recovery, it does not end it early
    assert not dest.exists()
    error = spool.stats.errors[SEGMENT]
    assert error.startswith(f"wal_005/{SEGMENT}.zst: WAL file {SEGMENT} decodes to more "
                            "than the WAL segment size (16.0 MiB, 16777216 bytes)"), error
    assert spool.stats.bytes == 0


def test_twin_a_wal_object_of_the_segment_size_is_delivered(tmp_path):
    rc, spool, dest = _ask(tmp_path, 16 * MiB)
    assert rc == 0
    assert dest.stat().st_size == 16 * MiB
    assert spool.stats.errors == {}


def test_a_reservation_holds_only_the_backup_it_was_made_for(tmp_path):
    """Another backup's objects (a fallback the pre-flight did not measure) are not held to it."""
    store = _store_with(tmp_path, zst_bomb_tar(members=2, each=16 * MiB))
    work = tmp_path / "work"
    reserve(1 * MiB, "test", [work], keys={"basebackups/b2/base.tar.zst"})
    try:
        _, written = extract_tars(store, [TarObject("base.tar.zst", work / "run-1/pgdata")], workers=1, name="t")
        assert written == 32 * MiB
        reserve(1 * MiB, "test", [work], keys={"base.tar.zst"})  # twin: its own backup's object
        with pytest.raises(CorruptBackup, match="the disk pre-flight reserved"):
            extract_tars(store, [TarObject("base.tar.zst", work / "run-2/pgdata")], workers=1, name="t")
    finally:
        reserve(None)


def test_each_run_dir_counts_from_zero(tmp_path):
    """A retried attempt extracts into a new run dir: the first attempt's bytes are not counted."""
    store = _store_with(tmp_path, zst_bomb_tar(members=2, each=16 * MiB))
    work = tmp_path / "work"
    reserve(40 * MiB, "test", [work])
    try:
        for run in ("run-1", "run-2"):
            _, written = extract_tars(store, [TarObject("base.tar.zst", work / run / "pgdata")], workers=1,
                                      name="t")
            assert written == 32 * MiB
    finally:
        reserve(None)


def test_a_stream_backups_pg_wal_tar_is_counted_from_its_lsn_range():
    from pytest_pgrestore.formats._catalog import Backup, Catalog, WalArchive
    from pytest_pgrestore.restore._diskcheck import _pg_wal_tar_bytes

    seg = 16 * MiB
    catalog = Catalog(source="t", format="basebackup", backups=[], wal=WalArchive(segment_size=seg))
    streamed = Backup(name="b", format="basebackup", start_lsn=3 * seg + 40, stop_lsn=4 * seg + 100, timeline=1,
                      details={"tars": {"base.tar": "k/base.tar", "pg_wal.tar.zst": "k/pg_wal.tar.zst"}})
    assert _pg_wal_tar_bytes(catalog, streamed) == 3 * seg  # segments 3 and 4, and one more
    fetched = Backup(name="b", format="basebackup", start_lsn=3 * seg, stop_lsn=4 * seg, timeline=1,
                     details={"tars": {"base.tar": "k/base.tar"}})
    assert _pg_wal_tar_bytes(catalog, fetched) == 0  # -X fetch: the WAL is in base.tar and its manifest
