"""codecs.py: codec detection, streaming decompression (and its failures), and tar extraction
that never writes outside its destination.  Hostile archives are built in memory."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import lzma
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

import lz4.frame
import pytest
import zstandard

from pytest_pgrestore.errors import CorruptBackup, FormatError, PgRestoreError
from pytest_pgrestore.formats._codecs import (
    COMPRESSION_SUFFIXES,
    copy_stream,
    detect_codec,
    extract_tar,
    open_decompressed,
    strip_suffix,
)

# Some incompressible bytes, then text-like rows (small: xz and bzip2 are slow).
DATA = os.urandom(16_000) + b"".join(b"%d|tuple %d|%d\n" % (i, i * 7919 % 10007, i % 97) for i in range(8000))


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(data)


def _zstd_checked(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, preset=0)


def _bz2(data: bytes) -> bytes:
    return bz2.compress(data, 1)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, 1)


COMPRESS = {
    "gzip": (_gzip, ".gz"),
    "lz4": (lz4.frame.compress, ".lz4"),
    "zstd": (_zstd, ".zst"),
    "xz": (_xz, ".xz"),
    "bzip2": (_bz2, ".bz2"),
}
_PACKED: dict = {}


def packed(compress) -> bytes:
    """``compress(DATA)``, computed once per codec."""
    if compress not in _PACKED:
        _PACKED[compress] = compress(DATA)
    return _PACKED[compress]


def read_all(stream) -> bytes:
    out = io.BytesIO()
    copy_stream(stream, out, "test")
    return out.getvalue()


# -- detection -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "spec"), COMPRESS.items())
def test_detect_by_magic(codec, spec):
    compress, _ext = spec
    assert detect_codec(compress(b"x")[:8]) == codec
    assert detect_codec(compress(b"x")[:8], "000000010000000000000003") == codec


@pytest.mark.parametrize(("codec", "spec"), COMPRESS.items())
def test_magic_beats_the_extension(codec, spec):
    compress, _ext = spec
    assert detect_codec(compress(b"x")[:8], "base.tar.br") == codec
    assert detect_codec(compress(b"x")[:8], "base.tar.gz" if codec != "gzip" else "base.tar.zst") == codec


@pytest.mark.parametrize(
    ("name", "codec"),
    [("000000010000000000000003.br", "brotli"), ("000000010000000000000003.lzma", "lzma")],
)
def test_detect_by_extension_when_there_is_no_magic(name, codec):
    assert detect_codec(b"\x0b\x80\x00\x00\x00\x00\x00\x00", name) == codec


@pytest.mark.parametrize(
    "name", ["base.tar", "base.tar.gz", "000000010000000000000003.zst", "x.lz4", "x.xz", "x.bz2", ""]
)
def test_plain_bytes_are_uncompressed_whatever_the_extension(name):
    assert detect_codec(b"PG_VERSI", name) is None
    assert detect_codec(b"", name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000000010000000000000003.zst", ("000000010000000000000003", "zstd")),
        ("000000010000000000000003.lz4", ("000000010000000000000003", "lz4")),
        ("00000002.history.gz", ("00000002.history", "gzip")),
        ("base.tar.br", ("base.tar", "brotli")),
        ("x.lzma", ("x", "lzma")),
        ("x.xz", ("x", "xz")),
        ("x.bz2", ("x", "bzip2")),
        ("000000010000000000000003", ("000000010000000000000003", None)),
        ("000000010000000000000003.partial", ("000000010000000000000003.partial", None)),
    ],
)
def test_strip_suffix(name, expected):
    assert strip_suffix(name) == expected


def test_every_suffix_is_stripped():
    for suffix, codec in COMPRESSION_SUFFIXES.items():
        assert strip_suffix("f" + suffix) == ("f", codec)


# -- streaming decompression -----------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "spec"), COMPRESS.items())
def test_round_trip(codec, spec):
    compress, ext = spec
    data = packed(compress)
    assert read_all(open_decompressed(io.BytesIO(data), f"x{ext}")) == DATA
    assert read_all(open_decompressed(io.BytesIO(data), "no-extension")) == DATA


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd"])
def test_round_trip_longer_than_a_read_chunk(codec):
    compress, ext = COMPRESS[codec]
    big = DATA + bytes(3 << 20) + DATA  # a mostly empty 16 MB-ish WAL segment, in small
    assert read_all(open_decompressed(io.BytesIO(compress(big)), f"x{ext}")) == big


@pytest.mark.parametrize(("codec", "spec"), COMPRESS.items())
def test_small_reads(codec, spec):
    compress, _ext = spec
    stream = open_decompressed(io.BytesIO(compress(DATA[:5000])), "x")
    parts = []
    while chunk := stream.read(7):
        parts.append(chunk)
    assert b"".join(parts) == DATA[:5000]


def test_uncompressed_passes_through():
    assert read_all(open_decompressed(io.BytesIO(DATA), "base.tar")) == DATA
    assert read_all(open_decompressed(io.BytesIO(b"abc"), "x")) == b"abc"  # shorter than the sniffed head
    assert read_all(open_decompressed(io.BytesIO(b""), "x")) == b""


def test_lzma_alone_by_extension():
    data = lzma.compress(DATA, format=lzma.FORMAT_ALONE, preset=0)
    assert read_all(open_decompressed(io.BytesIO(data), "000000010000000000000003.lzma")) == DATA


def test_brotli_by_extension():
    brotli = pytest.importorskip("brotli")
    data = brotli.compress(DATA, quality=1)
    assert read_all(open_decompressed(io.BytesIO(data), "000000010000000000000003.br")) == DATA


def test_zstd_of_several_frames():
    data = _zstd(DATA[:1000]) + _zstd_checked(DATA[1000:]) + _zstd(b"")
    assert read_all(open_decompressed(io.BytesIO(data), "x.zst")) == DATA


def test_zstd_with_a_skippable_frame():
    skippable = (0x184D2A5E).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"meta"
    # (a leading one shares its magic with lz4's skippable frames: detection cannot tell them apart)
    data = _zstd(DATA[:1000]) + skippable + _zstd_checked(DATA[1000:]) + skippable
    assert read_all(open_decompressed(io.BytesIO(data), "x.zst")) == DATA


def test_gzip_of_several_members():
    data = gzip.compress(DATA[:1000]) + gzip.compress(DATA[1000:])
    assert read_all(open_decompressed(io.BytesIO(data), "x.gz")) == DATA


def test_closing_closes_the_source():
    raw = io.BytesIO(gzip.compress(b"abc"))
    stream = open_decompressed(raw, "x.gz")
    stream.read()
    stream.close()
    # gzip/lz4/zstd wrappers close the buffered reader over the source
    stream2 = open_decompressed(io.BytesIO(b"plain"), "x")
    stream2.close()
    assert stream2.closed


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flipped(data: bytes) -> bytes:
    at = len(data) * 3 // 4
    return data[:at] + bytes([data[at] ^ 0x55]) + data[at + 1 :]


def _garbage_after_header(data: bytes) -> bytes:
    return data[:16] + b"\xa5" * 4096


# (codec, compress, damage): every damage the format can detect must surface as CorruptBackup
DAMAGED = [
    (codec, compress, damage)
    for codec, (compress, _ext) in COMPRESS.items()
    for damage in (_truncated, _flipped, _garbage_after_header)
    # lz4 frames and zstd frames without a content checksum cannot see a flipped byte
    if not (damage is _flipped and codec in ("lz4", "zstd"))
] + [("zstd", _zstd_checked, _flipped), ("zstd", _zstd, lambda p: p[:-1]), ("zstd", _zstd, lambda p: p[:5])]


@pytest.mark.parametrize(
    ("codec", "compress", "damage"),
    DAMAGED,
    ids=[f"{c}-{getattr(d, '__name__', 'cut')}" for c, _, d in DAMAGED],
)
def test_damaged_stream_is_corrupt_backup_naming_the_object(codec, compress, damage):
    key = "s3://drills/wal/000000010000000000000003"
    with pytest.raises(CorruptBackup) as err:
        copy_stream(open_decompressed(io.BytesIO(damage(packed(compress))), key), io.BytesIO(), key)
    assert err.value.what.startswith(f"{key}: the compressed stream is damaged")
    assert "restore from another backup" in err.value.fix


def test_a_real_io_error_is_not_blamed_on_the_backup():
    class Full(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        copy_stream(io.BytesIO(b"x" * 10), Full(), "k")
    assert not isinstance(err.value, PgRestoreError)
    assert err.value.errno == errno.ENOSPC


def test_corrupt_backup_is_a_format_error():
    assert issubclass(CorruptBackup, FormatError)


# -- tar extraction ------------------------------------------------------------------------------------


def member(
    name: str,
    data: bytes | None = None,
    *,
    type: bytes = tarfile.REGTYPE,
    linkname: str = "",
    mode: int = 0o600,
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = mode
    if data is not None:
        info.size = len(data)
    if type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def pgdata_tar(fmt: int = tarfile.GNU_FORMAT) -> bytes:
    return make_tar(
        member("backup_label", b"START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n"),
        member("PG_VERSION", b"16\n"),
        member("base", type=tarfile.DIRTYPE, mode=0o700),
        member("base/1", type=tarfile.DIRTYPE, mode=0o700),
        member("base/1/1259", b"\0" * 8192 * 3),
        member("pg_wal", type=tarfile.DIRTYPE),
        member("pg_tblspc/16385", type=tarfile.SYMTYPE, linkname="/srv/pg/ts1"),
        member("global/pg_control", b"\x01" * 8192),  # its parent directory was never listed
        member("./.hidden", b"dot"),
        member("sub/" + "d" * 120 + "/file", b"long name"),
        fmt=fmt,
    )


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "restore" / "pgdata"
    d.mkdir(parents=True)
    return d


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def outside(dest: Path) -> set[str]:
    return (
        all_files(dest.parent.parent)
        - {str(Path("restore") / "pgdata" / p) for p in all_files(dest)}
        - {
            "restore",
            "restore/pgdata",
        }
    )


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_extract_pgdata(dest, fmt):
    links = []
    total = extract_tar(
        io.BytesIO(pgdata_tar(fmt)),
        dest,
        label="base.tar",
        on_symlink=lambda rel, target: links.append((rel, target)),
    )
    assert (dest / "PG_VERSION").read_bytes() == b"16\n"
    assert (dest / "base/1/1259").read_bytes() == b"\0" * 8192 * 3
    assert (dest / "global/pg_control").read_bytes() == b"\x01" * 8192
    assert (dest / ".hidden").read_bytes() == b"dot"
    assert (dest / "sub" / ("d" * 120) / "file").read_bytes() == b"long name"
    assert (dest / "pg_wal").is_dir()
    assert links == [(PurePosixPath("pg_tblspc/16385"), "/srv/pg/ts1")]
    assert not (dest / "pg_tblspc/16385").exists()  # the format decides where a tablespace goes
    assert stat.S_IMODE((dest / "base").stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "PG_VERSION").stat().st_mode) == 0o600
    assert total == sum(
        len(d)
        for d in [
            b"START WAL LOCATION: 0/9000028 (file 000000010000000000000009)\n",
            b"16\n",
            b"\0" * 8192 * 3,
            b"\x01" * 8192,
            b"dot",
            b"long name",
        ]
    )
    assert outside(dest) == set()


@pytest.mark.parametrize(
    ("codec", "spec"), [("gzip", COMPRESS["gzip"]), ("lz4", COMPRESS["lz4"]), ("zstd", COMPRESS["zstd"])]
)
def test_extract_compressed_tar(dest, codec, spec):
    compress, ext = spec
    stream = open_decompressed(io.BytesIO(compress(pgdata_tar())), f"base.tar{ext}")
    extract_tar(stream, dest, label=f"base.tar{ext}", on_symlink=lambda rel, target: None)
    assert (dest / "global/pg_control").read_bytes() == b"\x01" * 8192


def test_extract_overwrites_a_file_already_there(dest):
    (dest / "PG_VERSION").write_text("15\n")
    extract_tar(io.BytesIO(make_tar(member("PG_VERSION", b"16\n"))), dest, label="t")
    assert (dest / "PG_VERSION").read_text() == "16\n"


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "../../evil",
        "base/../../evil",
        "./../evil",
        "/etc/evil",
        "//etc/evil",
        "base/1/../../../evil",
        "..",
    ],
)
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_paths_outside_dest_are_refused(dest, name, kind):
    m = member(name, b"pwned") if kind == "file" else member(name, type=tarfile.DIRTYPE)
    with pytest.raises(CorruptBackup) as err:
        extract_tar(io.BytesIO(make_tar(member("PG_VERSION", b"16\n"), m)), dest, label="base.tar")
    assert repr(name) in err.value.what
    assert err.value.what.startswith("base.tar: member")
    assert outside(dest) == set()


@pytest.mark.parametrize(
    ("m", "kind"),
    [
        (member("global/pg_control", type=tarfile.LNKTYPE, linkname="PG_VERSION"), "hard link"),
        (member("dev/null", type=tarfile.CHRTYPE), "character device"),
        (member("dev/sda", type=tarfile.BLKTYPE), "block device"),
        (member("pipe", type=tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_special_members_are_refused(dest, m, kind):
    with pytest.raises(CorruptBackup) as err:
        extract_tar(io.BytesIO(make_tar(member("PG_VERSION", b"16\n"), m)), dest, label="base.tar")
    assert repr(m[0].name) in err.value.what
    assert "refused type" in err.value.what
    assert not (dest / m[0].name).exists()


def test_hard_link_to_a_file_outside_is_refused(dest):
    m = member("stolen", type=tarfile.LNKTYPE, linkname="/etc/passwd")
    with pytest.raises(CorruptBackup, match="'stolen'"):
        extract_tar(io.BytesIO(make_tar(m)), dest, label="base.tar")
    assert not (dest / "stolen").exists()


def test_symlink_without_a_handler_is_refused(dest):
    tar = make_tar(member("pg_wal", type=tarfile.SYMTYPE, linkname="/var/lib/postgresql/wal"))
    with pytest.raises(CorruptBackup) as err:
        extract_tar(io.BytesIO(tar), dest, label="base.tar")
    assert err.value.what == "base.tar: unexpected symlink 'pg_wal' -> '/var/lib/postgresql/wal'"
    assert not (dest / "pg_wal").exists()


def test_symlink_handler_can_refuse(dest):
    def only_tablespaces(rel: PurePosixPath, target: str) -> None:
        if rel.parts[0] != "pg_tblspc":
            raise CorruptBackup(f"unexpected symlink {rel} -> {target}")

    tar = make_tar(
        member("pg_tblspc/16385", type=tarfile.SYMTYPE, linkname="/srv/ts"),
        member("escape", type=tarfile.SYMTYPE, linkname="/"),
        member("escape/etc/evil", b"x"),
    )
    with pytest.raises(CorruptBackup, match="escape -> /"):
        extract_tar(io.BytesIO(tar), dest, label="base.tar", on_symlink=only_tablespaces)
    assert outside(dest) == set()


def test_file_through_an_accepted_symlink_stays_inside(dest):
    # the handler only records links; a later member under the link's name is a plain path in dest
    tar = make_tar(
        member("pg_tblspc/16385", type=tarfile.SYMTYPE, linkname="/"),
        member("pg_tblspc/16385/etc/evil", b"x"),
    )
    extract_tar(io.BytesIO(tar), dest, label="base.tar", on_symlink=lambda rel, target: None)
    assert (dest / "pg_tblspc/16385/etc/evil").read_bytes() == b"x"
    assert not (dest / "pg_tblspc/16385").is_symlink()
    assert outside(dest) == set()


def test_existing_symlink_in_dest_is_not_followed_for_a_file(dest, tmp_path):
    target = tmp_path / "victim"
    target.write_text("keep")
    (dest / "PG_VERSION").symlink_to(target)
    with pytest.raises(OSError):
        extract_tar(io.BytesIO(make_tar(member("PG_VERSION", b"16\n"))), dest, label="t")
    assert target.read_text() == "keep"


def _cut(data: bytes, at: int) -> bytes:
    return data[:at]


def test_truncated_tar_inside_a_member(dest):
    tar = make_tar(member("PG_VERSION", b"16\n"), member("base/1/1259", b"\0" * 8192 * 3))
    with pytest.raises(CorruptBackup, match="base.tar"):
        extract_tar(io.BytesIO(_cut(tar, 512 + 512 + 512 + 4096)), dest, label="base.tar")


def test_truncated_tar_inside_a_header(dest):
    tar = make_tar(member("PG_VERSION", b"16\n"), member("global/pg_control", b"\x01" * 8192))
    with pytest.raises(CorruptBackup, match="base.tar"):
        extract_tar(io.BytesIO(_cut(tar, 1024 + 100)), dest, label="base.tar")


def test_truncated_tar_at_a_member_boundary(dest):
    # pg_basebackup sends global/pg_control last: a tar cut right before it must not pass
    tar = make_tar(member("PG_VERSION", b"16\n"), member("global/pg_control", b"\x01" * 8192))
    with pytest.raises(CorruptBackup, match="base.tar"):
        extract_tar(io.BytesIO(_cut(tar, 1024)), dest, label="base.tar")
    with pytest.raises(CorruptBackup, match="base.tar"):
        extract_tar(io.BytesIO(_cut(tar, 1024 + 512 + 8192)), dest, label="base.tar")


def test_damaged_member_header(dest):
    tar = bytearray(make_tar(member("PG_VERSION", b"16\n"), member("global/pg_control", b"\x01" * 8192)))
    tar[1024 + 3] ^= 0x20  # "global" -> "glObal": the header checksum no longer matches
    with pytest.raises(CorruptBackup, match="unreadable member header at offset 1024"):
        extract_tar(io.BytesIO(bytes(tar)), dest, label="base.tar")


def test_tar_with_a_single_end_block_is_accepted(dest):
    # some writers end with one zero block; what matters is that the end was written
    tar = make_tar(member("PG_VERSION", b"16\n"))
    extract_tar(io.BytesIO(_cut(tar, 1024 + 512)), dest, label="base.tar")
    assert (dest / "PG_VERSION").read_bytes() == b"16\n"


@pytest.mark.parametrize("data", [b"", b"not a tar at all" * 100, b"\xff" * 512])
def test_not_a_tar(dest, data):
    with pytest.raises(CorruptBackup, match="base.tar"):
        extract_tar(io.BytesIO(data), dest, label="base.tar")


@pytest.mark.parametrize("codec", ["gzip", "zstd", "lz4", "xz"])
def test_truncated_compressed_tar(dest, codec):
    compress, ext = COMPRESS[codec]
    big = make_tar(*(member(f"base/1/{16384 + i}", os.urandom(4000) + DATA[:20000]) for i in range(12)))
    data = compress(big)
    stream = open_decompressed(io.BytesIO(data[: len(data) * 2 // 3]), f"base.tar{ext}")
    with pytest.raises(CorruptBackup, match=f"base.tar{ext}"):
        extract_tar(stream, dest, label=f"base.tar{ext}")


@pytest.mark.parametrize("codec", ["gzip", "xz", "bzip2"])
def test_damaged_compressed_tar(dest, codec):
    compress, ext = COMPRESS[codec]
    big = make_tar(*(member(f"base/1/{16384 + i}", os.urandom(4000) + DATA[:20000]) for i in range(12)))
    stream = open_decompressed(io.BytesIO(_flipped(compress(big))), f"base.tar{ext}")
    with pytest.raises(CorruptBackup, match=f"base.tar{ext}"):
        extract_tar(stream, dest, label=f"base.tar{ext}")


def test_owner_is_applied(dest):
    if os.getuid() != 0:
        pytest.skip("chown needs root")
    extract_tar(io.BytesIO(pgdata_tar()), dest, label="t", on_symlink=lambda r, t: None, owner=(4242, 4343))
    for p in [dest / "base", dest / "PG_VERSION", dest / "base/1/1259"]:
        assert (p.stat().st_uid, p.stat().st_gid) == (4242, 4343)
