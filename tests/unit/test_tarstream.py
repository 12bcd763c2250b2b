"""The tar stream reader and the writer thread (what extract_tar and the WAL-G reader stand on)."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.formats._codecs import extract_tar
from pytest_pgrestore.formats._tarstream import TarStream, TruncatedTar, Writer


def make(*members: tuple[str, bytes], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


LONG = "base/16384/" + "x" * 150  # longer than ustar's 100 bytes: a PAX or GNU long-name header


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_and_unread_data_are_handled(fmt):
    tar = TarStream(io.BytesIO(make((LONG, b"a" * 3000), ("PG_VERSION", b"15\n"), fmt=fmt)))
    seen = []
    for member in tar.members():
        seen.append((member.name, member.size))
        if member.name == "PG_VERSION":
            assert tar.read_data() == b"15\n" and tar.read_data() == b""
        # the long member's data is never read: the next header is found all the same
    assert seen == [(LONG, 3000), ("PG_VERSION", 3)] and tar.ended


def test_extract_writes_long_names_and_large_members_whole(tmp_path):
    big = os.urandom(3 << 20)  # several 1 MiB chunks through the writer thread
    extract_tar(io.BytesIO(make((LONG, big), ("global/pg_control", b"c" * 8192))), tmp_path, label="t")
    assert (tmp_path / LONG).read_bytes() == big
    assert (tmp_path / "global/pg_control").stat().st_size == 8192


def test_a_stream_ending_inside_a_member_is_truncated():
    data = make(("a", b"x" * 5000))
    tar = TarStream(io.BytesIO(data[: 512 + 2000]))
    with pytest.raises(TruncatedTar, match="inside a member"):
        for _member in tar.members():
            while tar.read_data():
                pass


def test_a_write_error_reaches_the_caller_and_every_descriptor_is_closed(tmp_path):
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT, 0o600)  # read-only: every write fails
    other = os.open(tmp_path / "g", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(OSError):
        with Writer() as w:
            w.write(fd, b"data")
            w.close(fd, None)
            try:
                for _ in range(100):  # sooner or later the writer's error surfaces here
                    w.write(other, b"more")
            finally:
                w.close(other, None)  # as extract_tar does: queued even when the writer failed
    for closed in (fd, other):
        with pytest.raises(OSError):
            os.fstat(closed)


def test_a_failed_block_drops_queued_writes_but_closes_files(tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(CorruptBackup):
        with Writer() as w:
            w.write(fd, b"partial")
            w.close(fd, None)
            raise CorruptBackup("the stream broke")
    with pytest.raises(OSError):
        os.fstat(fd)


def test_also_runs_on_the_writer_thread_in_order(tmp_path):
    import hashlib

    digest = hashlib.sha1()
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    chunks = [os.urandom(1000) for _ in range(50)]
    with Writer(max_chunks=2) as w:
        for c in chunks:
            w.write(fd, c, also=digest.update)
        w.close(fd, None)
    assert digest.hexdigest() == hashlib.sha1(b"".join(chunks)).hexdigest()
    assert (tmp_path / "f").read_bytes() == b"".join(chunks)


def test_small_files_are_created_on_the_writer_thread_in_order(tmp_path):
    with Writer(max_chunks=2) as w:
        for i in range(20):
            w.write_file(tmp_path / f"f{i}", [b"a" * i, b"b"], None)
        w.write_file(tmp_path / "f3", [b"last wins"], None)  # the same path again: queue order holds
    assert (tmp_path / "f7").read_bytes() == b"aaaaaaab"
    assert (tmp_path / "f3").read_bytes() == b"last wins"
    assert oct((tmp_path / "f0").stat().st_mode & 0o777) == "0o600"


def test_a_small_file_that_cannot_be_created_fails_the_extraction(tmp_path):
    """O_NOFOLLOW on the writer thread too: a member whose path ends in a symlink is never
    written through it; the error reaches the caller when the block ends."""
    (tmp_path / "elsewhere").write_bytes(b"untouched")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError):
        with Writer() as w:
            w.write_file(tmp_path / "link", [b"through the link"], None)
    assert (tmp_path / "elsewhere").read_bytes() == b"untouched"


def test_extract_creates_small_and_large_members_alike(tmp_path):
    small = [(f"base/1/{n}", os.urandom(n * 100)) for n in range(30)]
    large = ("base/1/big", os.urandom((1 << 20) * 3 + 5))
    written = extract_tar(io.BytesIO(make(*small, large)), tmp_path, label="t")
    assert written == sum(len(d) for _, d in small) + len(large[1])
    for name, data in [*small, large]:
        assert (tmp_path / name).read_bytes() == data
