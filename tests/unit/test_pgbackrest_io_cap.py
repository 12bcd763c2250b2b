"""A pgBackRest repository file decoded with its manifest size as a cap (issue 19).

``open_codec(..., limit=size)`` stops at the cap: a file that decodes past its ``size`` in
backup.manifest fails naming the file and its repository key and the cap, and what a caller wrote
by then stays within it (pgBackRest's own size and SHA-1 check comes only after the whole file).
"""

from __future__ import annotations

import bz2
import gzip
import io

import lz4.frame
import pytest
import zstandard

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.formats._pgbackrest_io import open_codec

MiB = 1 << 20
SIZE = 1 * MiB  # the manifest's size of the file
LABEL = "pg_data/base/5/16385 (stored in backup/db/20260101-000000F/pg_data/base/5/16385.zst)"


def _encode(codec: str, data: bytes) -> bytes:
    return {"lz4": lz4.frame.compress, "zst": zstandard.ZstdCompressor().compress, "gz": gzip.compress,
            "bz2": bz2.compress, "none": lambda d: d}[codec](data)


def _copy(stream, out: io.BytesIO) -> None:
    while chunk := stream.read(256 << 10):
        out.write(chunk)


@pytest.mark.parametrize("codec", ["lz4", "zst", "gz", "bz2", "none"])
def test_a_file_decoding_past_its_manifest_size_stops_at_the_cap(codec):
    bomb = _encode(codec, bytes(64 * MiB if codec != "none" else SIZE + 1))  # 64 MiB where 1 MiB is declared
    out = io.BytesIO()
    with pytest.raises(CorruptBackup) as err:
        with open_codec(io.BytesIO(bomb), codec, label=LABEL, limit=SIZE) as stream:
            _copy(stream, out)
    message = str(err.value)
    assert message.startswith(f"{LABEL} decodes to more than its size in backup.manifest ({SIZE} bytes)"), message
    assert "stopped at that cap" in message
    assert len(out.getvalue()) <= SIZE  # nothing past the cap was handed on to be written


@pytest.mark.parametrize("codec", ["lz4", "zst", "gz", "bz2", "none"])
def test_twin_a_file_of_exactly_its_manifest_size_decodes_whole(codec):
    data = bytes(range(256)) * (SIZE // 256)
    out = io.BytesIO()
    with open_codec(io.BytesIO(_encode(codec, data)), codec, label=LABEL, limit=SIZE) as stream:
        _copy(stream, out)
    assert out.getvalue() == data


def test_without_a_limit_nothing_changes():
    data = bytes(3 * MiB)
    with open_codec(io.BytesIO(_encode("zst", data)), "zst", label=LABEL) as stream:
        assert stream.read() == data


def test_read_all_is_capped_too():
    with pytest.raises(CorruptBackup, match="stopped at that cap"):
        with open_codec(io.BytesIO(_encode("zst", bytes(8 * MiB))), "zst", label=LABEL, limit=SIZE) as stream:
            stream.read()
    with open_codec(io.BytesIO(_encode("gz", bytes(SIZE))), "gz", label=LABEL, limit=SIZE) as stream:
        assert stream.read() == bytes(SIZE)
