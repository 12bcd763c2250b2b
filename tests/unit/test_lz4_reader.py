"""codecs.Lz4Reader: large-step lz4 decoding, lz4 checking every frame's checksums itself.

These tests hold it to the same output as lz4 itself on every frame layout lz4 writes, and to
lz4's refusals: a damaged header, a damaged content (the frame's content checksum), a cut stream.
"""

from __future__ import annotations

import io
import itertools
import os
import struct

import lz4.frame
import pytest

from pytest_pgrestore.formats._codecs import Lz4Reader

PAYLOAD = (b"pgbench_accounts" * 5000 + os.urandom(70_000)) * 5  # compressible and not, ~750 KB


def _frame(data: bytes = PAYLOAD, **kw) -> bytes:
    return lz4.frame.compress(data, **kw)


def _decode(blob: bytes, *, step: int | None = None, read: int = 1 << 20, monkeypatch=None) -> bytes:
    if step is not None:
        monkeypatch.setattr(Lz4Reader, "_IN", step)
    reader = Lz4Reader(io.BytesIO(blob))
    return b"".join(iter(lambda: reader.read(read), b""))


LAYOUTS = [dict(zip(("content_checksum", "block_linked", "block_checksum", "store_size", "block_size"), v,
                    strict=True))
           for v in itertools.product((True, False), (True, False), (True, False), (True, False),
                                      (lz4.frame.BLOCKSIZE_MAX64KB, lz4.frame.BLOCKSIZE_MAX4MB))]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda kw: "-".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                                                                    for k, v in kw.items()))
def test_every_frame_layout_decodes_to_the_same_bytes(layout):
    assert _decode(_frame(**layout)) == PAYLOAD


@pytest.mark.parametrize("step", [1, 3, 7, 11, 4096])
def test_header_and_checksum_split_across_reads(step, monkeypatch):
    """Tiny input steps put the header and the 4 checksum bytes across read boundaries."""
    blob = _frame(PAYLOAD[:50_000], content_checksum=True) + _frame(b"second", content_checksum=True, store_size=True)
    assert _decode(blob, step=step, monkeypatch=monkeypatch) == PAYLOAD[:50_000] + b"second"


def test_frames_one_after_another_with_mixed_flags_and_a_skippable_frame():
    skippable = struct.pack("<II", 0x184D2A50, 5) + b"hello"
    parts = [_frame(b"a" * 100_000, content_checksum=True), skippable, _frame(b"b" * 10, content_checksum=False),
             _frame(PAYLOAD, content_checksum=True, store_size=True), _frame(b"", content_checksum=True)]
    expected = b"a" * 100_000 + b"b" * 10 + PAYLOAD
    assert _decode(b"".join(parts)) == expected


def test_a_flipped_literal_is_caught_by_lz4s_content_checksum():
    """The twin: a flipped content byte in the last literal run is invisible to lz4's block
    decoding; the frame's content checksum, which lz4 verifies, finds it."""
    data = os.urandom(20_000)  # incompressible: stored as literals, a flipped byte decodes wrongly
    blob = bytearray(_frame(data, content_checksum=True, block_size=lz4.frame.BLOCKSIZE_MAX64KB))
    blob[-20] ^= 0x01  # inside the block's data, before the end mark and the checksum
    with pytest.raises(RuntimeError, match="(?i)checksum"):
        _decode(bytes(blob))


def test_a_damaged_header_is_refused():
    blob = bytearray(_frame(content_checksum=True))
    blob[5] ^= 0x10  # BD: the block size
    with pytest.raises(RuntimeError, match="(?i)header"):
        _decode(bytes(blob))


def test_a_stream_cut_inside_the_content_checksum_is_refused():
    blob = _frame(content_checksum=True)
    with pytest.raises(EOFError, match="inside a frame"):
        _decode(blob[:-2])


def test_a_stream_cut_inside_a_block_is_refused():
    blob = _frame(content_checksum=True)
    with pytest.raises(EOFError, match="inside a frame"):
        _decode(blob[: len(blob) // 2])


def test_bytes_that_are_not_lz4_are_refused():
    with pytest.raises(RuntimeError):
        _decode(b"not an lz4 frame at all" * 10)


def test_an_empty_object_is_empty():
    assert _decode(b"") == b""
