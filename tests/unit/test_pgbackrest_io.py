"""Whole-file decoding of small pgBackRest repository files."""

from __future__ import annotations

import bz2
import gzip
import os

import lz4.frame
import pytest
import zstandard

from pytest_pgrestore.formats._pgbackrest_io import decode_whole

DATA = os.urandom(3000) * 7
ENCODED = {"lz4": lz4.frame.compress(DATA), "zst": zstandard.ZstdCompressor().compress(DATA),
           "gz": gzip.compress(DATA), "bz2": bz2.compress(DATA), "none": DATA}


@pytest.mark.parametrize("codec", sorted(ENCODED))
def test_a_whole_file_decodes_in_one_call(codec):
    assert decode_whole(ENCODED[codec], codec, len(DATA) + 1) == DATA


@pytest.mark.parametrize("codec", ["lz4", "zst", "gz", "bz2"])
def test_output_stops_at_the_limit_so_a_forged_file_is_no_bomb(codec):
    assert len(decode_whole(ENCODED[codec], codec, 1000)) == 1000


@pytest.mark.parametrize("codec", ["lz4", "gz", "bz2"])
def test_a_stream_cut_short_is_an_error(codec):
    with pytest.raises(ValueError, match="ends early"):
        decode_whole(ENCODED[codec][: len(ENCODED[codec]) // 2], codec, len(DATA) + 1)


@pytest.mark.parametrize("codec", ["zst", "none"])
def test_a_cut_zst_or_plain_file_comes_back_short_for_the_size_check(codec):
    assert len(decode_whole(ENCODED[codec][: len(ENCODED[codec]) // 2], codec, len(DATA) + 1)) < len(DATA)


def test_a_flipped_lz4_byte_fails_its_frame_checksum():
    data = bytearray(lz4.frame.compress(DATA, content_checksum=True))  # as pgBackRest writes its frames
    data[len(data) // 2] ^= 0x01
    with pytest.raises(RuntimeError):  # what lz4 raises for a damaged frame; the caller names the file
        decode_whole(bytes(data), "lz4", len(DATA) + 1)


def test_an_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        decode_whole(b"x", "lzo", 10)
