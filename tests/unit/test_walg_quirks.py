"""WAL-G's quirks, each with a reader test that fails if the reader ignores it.

The backups here are small synthetic PGDATAs (no server needed) written by ``tests/walg_writer.py``
exactly per the layout; the WAL-G source each quirk comes from is cited in docs/formats/walg.md.
"""

from __future__ import annotations

import base64
import io
import json
import lzma
import os
import struct
import tarfile
from pathlib import Path

import pytest
import walg_writer as W

from pytest_pgrestore.errors import CorruptBackup, UsageError
from pytest_pgrestore.formats._codecs import open_codec
from pytest_pgrestore.formats._crypto import LibsodiumKey, SecretStreamReader
from pytest_pgrestore.formats._walg import WalgFormat
from pytest_pgrestore.formats._walg_layout import looks_plain, parse_sentinel, tar_kind
from pytest_pgrestore.formats._walg_tar import LevelFilter, apply_increment, extract_walg_tar
from pytest_pgrestore.store._local import LocalStore

PAGE = 8192


def page(lsn: int, fill: int) -> bytes:
    return struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF) + bytes([fill]) * (PAGE - 8)


def fake_basebackup(dest: Path, start: int, files: dict[str, bytes]) -> Path:
    """What ``pg_basebackup -Ft`` writes, with made-up contents: base.tar and backup_manifest."""
    dest.mkdir(parents=True)
    members = {"PG_VERSION": b"15\n", "global/pg_control": struct.pack("<Q", 7) + bytes(8184),
               "backup_label": f"START WAL LOCATION: 0/{start:X}\n".encode(), "tablespace_map": b"", **files}
    with tarfile.open(dest / "base.tar", "w") as tar:
        for d in ("global", "base", "base/5", "pg_wal", "pg_wal/archive_status"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ranges = [{"Timeline": 1, "Start-LSN": f"0/{start:X}", "End-LSN": f"0/{start + 0x100:X}"}]
    (dest / "backup_manifest").write_text(json.dumps({"WAL-Ranges": ranges}))
    return dest


HIST = {"START TIME": "2026-11-20 12:00:00 UTC", "STOP TIME": "2026-11-20 12:00:05 UTC"}


@pytest.fixture
def pg(tmp_path):
    """``pg(name, start, files)`` → a fake pg_basebackup dir."""
    return lambda name, start, files: fake_basebackup(tmp_path / "src" / name, start, files)


def restore(root: Path, tmp_path: Path, name: str = "LATEST", env=None) -> Path:
    fmt = WalgFormat(LocalStore(root), env=env or {})
    cat = fmt.catalog()
    backup = cat.backup(name)
    out = tmp_path / "restored"
    fmt.materialize(backup, out / "pgdata", out, owner=None)
    return out / "pgdata"


# -- tar conventions ---------------------------------------------------------------------------
def test_leading_slash_root_member_and_bare_excluded_dirs(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="none")
    w.push_backup(pg("b1", 0x2000028, {"base/5/1259": page(1, 7)}), history=HIST)
    part = next((tmp_path / "repo").rglob("part_001.tar"))
    names = [m.name for m in tarfile.open(part)]
    assert names[0] == "" and "/base/5/1259" in names and "/pg_wal" in names  # "/" reads back as ""
    assert not any(n.startswith("/pg_wal/") for n in names)  # excluded: a bare header
    pgdata = restore(tmp_path / "repo", tmp_path)
    assert (pgdata / "base/5/1259").read_bytes() == page(1, 7)
    assert (pgdata / "pg_wal").is_dir() and not any((pgdata / "pg_wal").iterdir())


def test_backup_label_and_empty_tablespace_map_without_slash(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="lz4")
    w.push_backup(pg("b1", 0x2000028, {}), history=HIST)
    label = next((tmp_path / "repo").rglob("backup_label.tar.lz4"))
    with open_codec(open(label, "rb"), "lz4") as s:
        assert [m.name for m in tarfile.open(fileobj=s, mode="r|")] == ["backup_label", "tablespace_map"]
    pgdata = restore(tmp_path / "repo", tmp_path)
    assert (pgdata / "backup_label").read_bytes().startswith(b"START WAL LOCATION: 0/2000028")
    assert (pgdata / "tablespace_map").stat().st_size == 0
    assert (pgdata / "global/pg_control").stat().st_size == 8192


def test_zero_padding_after_the_tar_is_accepted_and_anything_else_refused(tmp_path):
    body = W._tar([W.Entry(W._file_info("/PG_VERSION", 3), b"15\n")])
    level = LevelFilter(wanted=None, incremented=set(), skip=set())
    extract_walg_tar(io.BytesIO(body + bytes(50000)), tmp_path / "a", label="k", level=level, owner=None,
                     block_size=PAGE)
    assert (tmp_path / "a/PG_VERSION").read_bytes() == b"15\n"
    with pytest.raises(CorruptBackup, match="data follows the end of the tar"):
        extract_walg_tar(io.BytesIO(body + b"garbage"), tmp_path / "b", label="k", level=level, owner=None,
                         block_size=PAGE)


def test_copy_parts_are_read_and_their_stale_members_skipped(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="zstd", copy_names=True)
    pushed = w.push_backup(pg("b1", 0x2000028, {"base/5/1259": page(1, 7)}), history=HIST)
    assert tar_kind("copy_1.tar.tar") == ("copy", 1) and tar_kind("part_1234.tar.br") == ("part", 1234)
    part = next((tmp_path / "repo").rglob("copy_001.tar.zst"))
    extra = W._tar([W.Entry(W._file_info("/base/5/9999", 4), b"old!")])  # a stale member, not in Files
    tars = part.parent / "copy_002.tar.zst"
    tars.write_bytes(W.compress(extra, "zstd"))
    pgdata = restore(tmp_path / "repo", tmp_path, pushed.name)
    assert (pgdata / "base/5/1259").exists() and not (pgdata / "base/5/9999").exists()


# -- sentinels and LATEST -------------------------------------------------------------------------
def test_legacy_sentinel_lowercase_spec_and_files_inside(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="lz4", legacy_sentinel=True)
    b1 = w.push_backup(pg("b1", 0x2000028, {"base/5/1259": page(0x100, 1) + page(0x100, 2)}), history=HIST)
    b2 = w.push_backup(pg("b2", 0x4000028, {"base/5/1259": page(0x3000000, 9) + page(0x100, 2)}),
                       history=HIST, parent=b1)
    assert not list((tmp_path / "repo").rglob("files_metadata.json"))
    s = parse_sentinel(json.dumps({"LSN": 1, "spec": {"tablespaces": ["1"], "1": {"loc": "/x", "link":
                                                                                     "pg_tblspc/1"}}}), "k")
    assert s.spec["1"]["loc"] == "/x"
    sent = parse_sentinel((tmp_path / "repo/basebackups_005" / f"{b2.name}_backup_stop_sentinel.json").read_bytes(), "k")
    assert (sent.delta_lsn, sent.delta_from, "/base/5/1259" in sent.files) == (0x2000028, b1.name, True)
    pgdata = restore(tmp_path / "repo", tmp_path, b2.name)
    assert (pgdata / "base/5/1259").read_bytes() == page(0x3000000, 9) + page(0x100, 2)  # page 1 from the full


def test_latest_is_the_newest_sentinel_by_last_modified(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="lz4")
    b1 = w.push_backup(pg("b1", 0x2000028, {}), history=HIST)
    b2 = w.push_backup(pg("b2", 0x4000028, {}), history=HIST)
    sentinels = tmp_path / "repo/basebackups_005"
    W.set_mtime(sentinels / f"{b2.name}_backup_stop_sentinel.json", 1_700_000_000)
    W.set_mtime(sentinels / f"{b1.name}_backup_stop_sentinel.json", 1_700_000_100)  # re-uploaded later
    cat = WalgFormat(LocalStore(tmp_path / "repo"), env={}).catalog()
    assert cat.backup("LATEST").name == b1.name  # not the highest LSN, not the greatest name
    assert [b.name for b in cat.backups] == [b1.name, b2.name]


def test_unfinished_backup_without_sentinel_is_ignored(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="lz4")
    b1 = w.push_backup(pg("b1", 0x2000028, {}), history=HIST)
    b2 = w.push_backup(pg("b2", 0x4000028, {}), history=HIST)
    (tmp_path / "repo/basebackups_005" / f"{b2.name}_backup_stop_sentinel.json").unlink()
    cat = WalgFormat(LocalStore(tmp_path / "repo"), env={}).catalog()
    assert [b.name for b in cat.backups] == [b1.name]


# -- deltas ------------------------------------------------------------------------------------
def test_wi1_increment_truncates_then_writes_pages(tmp_path):
    target = tmp_path / "rel"
    target.write_bytes(page(1, 1) + page(1, 2) + page(1, 3))
    inc, blocks = W.increment(page(1, 1) + page(9, 9), 5)
    assert blocks == [1]
    apply_increment(io.BytesIO(inc), target, label="k", block_size=PAGE)
    assert target.read_bytes() == page(1, 1) + page(9, 9)
    with pytest.raises(CorruptBackup, match="bytes follow"):
        apply_increment(io.BytesIO(inc + b"x"), target, label="k", block_size=PAGE)
    with pytest.raises(CorruptBackup, match="no wi1 header"):
        apply_increment(io.BytesIO(b"wi2\x55" + inc[4:]), target, label="k", block_size=PAGE)


def test_delta_chain_restores_newest_pages_over_the_full(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="brotli")
    rel = "base/5/16384"
    b1 = w.push_backup(pg("b1", 0x2000028, {rel: page(0x100, 1) + page(0x100, 2), "base/5/gone": b"x"}),
                       history=HIST)
    b2 = w.push_backup(pg("b2", 0x4000028, {rel: page(0x100, 1) + page(0x3000000, 5) + page(0x3000000, 6)}),
                       history=HIST, parent=b1)
    b3 = w.push_backup(pg("b3", 0x6000028, {rel: page(0x5000000, 8) + page(0x3000000, 5) + page(0x3000000, 6)}),
                       history=HIST, parent=b2)
    assert b3.name == "base_000000010000000000000006_D_000000010000000000000004"
    pgdata = restore(tmp_path / "repo", tmp_path, b3.name)
    assert (pgdata / rel).read_bytes() == page(0x5000000, 8) + page(0x3000000, 5) + page(0x3000000, 6)
    assert not (pgdata / "base/5/gone").exists()  # not in the newest backup's file list


# -- codecs and keys -------------------------------------------------------------------------------
@pytest.mark.parametrize("checksum", [True, False])
def test_lz4_frames_with_and_without_content_checksum(checksum):
    data = os.urandom(5000) * 40
    packed = W.compress(data, "lz4", lz4_checksum=checksum)
    assert bool(packed[4] & 0x04) is checksum  # FLG content-checksum bit
    assert open_codec(io.BytesIO(packed), "lz4").read() == data


@pytest.mark.parametrize("known", [False, True])
def test_lzma_alone_of_unknown_and_known_size(known):
    data = os.urandom(3000) * 30
    packed = W.compress(data, "lzma", lzma_known_size=known)
    assert (packed[5:13] == b"\xff" * 8) is not known
    assert looks_plain(packed[:512], "lzma", tar=True)
    assert open_codec(io.BytesIO(packed), "lzma").read() == data
    assert lzma.decompress(packed, format=lzma.FORMAT_ALONE) == data


KEY = bytes(range(100, 132))


@pytest.mark.parametrize(("env", "expected"), [
    ({"WALG_LIBSODIUM_KEY": KEY.hex(), "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}, KEY),
    ({"WALG_LIBSODIUM_KEY": base64.b64encode(KEY).decode(), "WALG_LIBSODIUM_KEY_TRANSFORM": "base64"}, KEY),
    ({"WALG_LIBSODIUM_KEY": "a-raw-passphrase-of-30-bytes!!"}, b"a-raw-passphrase-of-30-bytes!!\0\0"),
    ({"WALG_LIBSODIUM_KEY": "x" * 40, "WALG_LIBSODIUM_KEY_TRANSFORM": "none"}, b"x" * 32),
])
def test_libsodium_keys_raw_hex_and_base64(env, expected):
    key = LibsodiumKey.from_env(env)
    assert key.key == expected and "WALG_LIBSODIUM_KEY" in key.origin
    plain = os.urandom(20000)
    assert SecretStreamReader(io.BytesIO(W.encrypt(plain, expected)), key, "k").read() == plain
    assert KEY.hex() not in repr(key)


def test_libsodium_key_from_path_and_bad_keys(tmp_path):
    (tmp_path / "key").write_text(KEY.hex() + "\n")
    key = LibsodiumKey.from_env({"WALG_LIBSODIUM_KEY_PATH": str(tmp_path / "key"),
                                 "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"})
    assert key.key == KEY
    for env, msg in [({"WALG_LIBSODIUM_KEY": "short"}, "at least 25"),
                     ({"WALG_LIBSODIUM_KEY": "ab", "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}, "decodes to 1 bytes"),
                     ({"WALG_LIBSODIUM_KEY": "zz", "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}, "not valid hex"),
                     ({"WALG_LIBSODIUM_KEY": "x" * 32, "WALG_LIBSODIUM_KEY_TRANSFORM": "rot13"}, "not a key transform")]:
        with pytest.raises(UsageError, match=msg):
            LibsodiumKey.from_env(env)
    assert LibsodiumKey.from_env({}) is None


@pytest.mark.parametrize("size", [0, 1, 8192, 8193, 3 * 8192])
def test_libsodium_stream_boundaries_truncation_and_flip(size):
    key = LibsodiumKey(KEY, "test")
    plain = os.urandom(size)
    sealed = W.encrypt(plain, KEY)
    assert SecretStreamReader(io.BytesIO(sealed), key, "obj").read() == plain
    with pytest.raises(CorruptBackup, match="obj: .*(truncated|MAC)"):
        SecretStreamReader(io.BytesIO(sealed[:-1]), key, "obj").read()
    flipped = bytearray(sealed)
    flipped[-5] ^= 1
    with pytest.raises(CorruptBackup, match="obj: a chunk fails its libsodium MAC"):
        SecretStreamReader(io.BytesIO(bytes(flipped)), key, "obj").read()


def test_encrypted_without_key_is_named_never_a_decompression_error(pg, tmp_path):
    w = W.WalgWriter(tmp_path / "repo", method="zstd", key=KEY)
    b1 = w.push_backup(pg("b1", 0x2000028, {}), history=HIST)
    fmt = WalgFormat(LocalStore(tmp_path / "repo"), env={})
    backup = fmt.catalog().backup(b1.name)
    assert backup.details["encryption"] == "libsodium"
    with pytest.raises(Exception, match="no libsodium key is configured"):
        fmt.materialize(backup, tmp_path / "out/pgdata", tmp_path / "out", owner=None)
    assert not (tmp_path / "out/pgdata").exists()  # refused before anything was fetched
