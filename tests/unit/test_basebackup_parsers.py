"""The pure parsers of the basebackup format: ``.backup`` files and backup_label, PostgreSQL's
timestamps, the manifest's WAL-Ranges and a WAL segment's long page header."""

from __future__ import annotations

import json
import struct
from datetime import datetime, timezone

import pytest

from pytest_pgrestore.formats._basebackup import (
    parse_backup_history,
    parse_long_header,
    parse_pg_time,
    parse_wal_ranges,
)
from pytest_pgrestore.formats._catalog import XLOG_PAGE_MAGIC
from pytest_pgrestore.formats._wal import infer_segment_size

UTC = timezone.utc

# wal/000000010000000000000009.00000028.backup as PostgreSQL 15 archives it
BACKUP_FILE = """\
START WAL LOCATION: 0/9000028 (file 000000010000000000000009)
STOP WAL LOCATION: 0/9000100 (file 000000010000000000000009)
CHECKPOINT LOCATION: 0/9000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-26 20:43:55 UTC
LABEL: 20261126T204355
START TIMELINE: 1
STOP TIME: 2026-11-26 20:43:55 UTC
STOP TIMELINE: 1
"""


def test_parse_backup_history_file():
    assert parse_backup_history(BACKUP_FILE) == {
        "START LSN": "0/9000028",
        "START FILE": "000000010000000000000009",
        "STOP LSN": "0/9000100",
        "STOP FILE": "000000010000000000000009",
        "CHECKPOINT LOCATION": "0/9000060",
        "BACKUP METHOD": "streamed",
        "BACKUP FROM": "primary",
        "START TIME": "2026-11-26 20:43:55 UTC",
        "LABEL": "20261126T204355",
        "START TIMELINE": "1",
        "STOP TIME": "2026-11-26 20:43:55 UTC",
        "STOP TIMELINE": "1",
    }


def test_backup_history_gives_times_and_segment_size():
    fields = parse_backup_history(BACKUP_FILE)
    assert parse_pg_time(fields["STOP TIME"]) == datetime(2026, 11, 26, 20, 43, 55, tzinfo=UTC)
    assert infer_segment_size(0x9000028, fields["START FILE"]) == 16 << 20


def test_parse_backup_label_of_an_incremental_backup_from_a_standby():
    # backup_label as PostgreSQL 17 writes it into base.tar
    label = (
        "START WAL LOCATION: 2/5A000028 (file 00000003000000020000005A)\n"
        "CHECKPOINT LOCATION: 2/5A000080\n"
        "BACKUP METHOD: streamed\n"
        "BACKUP FROM: standby\n"
        "START TIME: 2026-11-26 21:43:55 CET\n"
        "LABEL: nightly: incremental\n"
        "START TIMELINE: 3\n"
        "INCREMENTAL FROM LSN: 2/50000028\n"
        "INCREMENTAL FROM TLI: 3\n"
    )
    fields = parse_backup_history(label)
    assert fields["START LSN"] == "2/5A000028"
    assert fields["START FILE"] == "00000003000000020000005A"
    assert "STOP LSN" not in fields
    assert fields["LABEL"] == "nightly: incremental"  # only the first ": " separates
    assert fields["BACKUP FROM"] == "standby"
    assert fields["INCREMENTAL FROM LSN"] == "2/50000028"
    assert parse_pg_time(fields["START TIME"]) is None


def test_parse_backup_history_ignores_noise():
    text = "\n\ngarbage line\r\nSTART WAL LOCATION: 0/9000028 (file 000000010000000000000009)\r\nKEY:value\n"
    fields = parse_backup_history(text)
    assert fields == {"START LSN": "0/9000028", "START FILE": "000000010000000000000009"}
    assert parse_backup_history("") == {}


def test_a_malformed_location_line_is_kept_as_text_only():
    fields = parse_backup_history("START WAL LOCATION: 0/9000028 (file 00000001000000000000009)\n")
    assert "START LSN" not in fields
    assert fields["START WAL LOCATION"] == "0/9000028 (file 00000001000000000000009)"


# -- parse_pg_time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26 20:43:55 UTC", datetime(2026, 11, 26, 20, 43, 55, tzinfo=UTC)),
        ("2026-11-26 20:43:55 GMT", datetime(2026, 11, 26, 20, 43, 55, tzinfo=UTC)),
        ("2026-11-26 20:43:55 Z", datetime(2026, 11, 26, 20, 43, 55, tzinfo=UTC)),
        # log_timezone = 'Etc/GMT-3' prints "+03"
        ("2026-11-26 20:43:55 +03", datetime(2026, 11, 26, 17, 43, 55, tzinfo=UTC)),
        ("2026-11-26 20:43:55 -03", datetime(2026, 11, 26, 23, 43, 55, tzinfo=UTC)),
        ("2026-11-26 20:43:55 -05:30", datetime(2026, 11, 27, 2, 13, 55, tzinfo=UTC)),
        ("2026-11-26 20:43:55 +0530", datetime(2026, 11, 26, 15, 13, 55, tzinfo=UTC)),
        ("2026-12-31 23:30:00 -01", datetime(2027, 1, 1, 0, 30, tzinfo=UTC)),
    ],
)
def test_parse_pg_time(text, expected):
    parsed = parse_pg_time(text)
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "2026-11-26 20:43:55 CET",  # abbreviations are ambiguous (IST, CST, ...)
        "2026-11-26 20:43:55 Europe/Berlin",
        "2026-11-26 20:43:55.123 UTC",
        "2026-11-26T20:43:55Z",
        "26.11.2026 20:43:55 UTC",
        "2026-11-26 20:43:55 UTC extra",
        "2026-11-26 20:43:55 +3",
    ],
)
def test_parse_pg_time_refuses_what_it_cannot_place(text):
    assert parse_pg_time(text) is None


# -- backup_manifest WAL-Ranges ------------------------------------------------------------------------


def manifest(ranges: list[dict], *, version: int = 1, files: int = 200) -> str:
    """A backup_manifest spelled as PostgreSQL writes it (one object per line)."""
    head = f'{{ "PostgreSQL-Backup-Manifest-Version": {version},\n'
    if version >= 2:
        head += '"System-Identifier": 7712585929044878860,\n'
    entries = ",\n".join(
        f'{{ "Path": "base/5/{16384 + i}", "Size": 8192, "Last-Modified": "2026-11-26 20:52:26 GMT", '
        f'"Checksum-Algorithm": "CRC32C", "Checksum": "{i * 2654435761 % (1 << 32):08x}" }}'
        for i in range(files)
    )
    wal = ",\n".join(
        f'{{ "Timeline": {r["Timeline"]}, "Start-LSN": "{r["Start-LSN"]}", "End-LSN": "{r["End-LSN"]}" }}'
        for r in ranges
    )
    return (
        head + '"Files": [\n' + entries + "\n],\n"
        '"WAL-Ranges": [\n' + wal + "\n],\n"
        '"Manifest-Checksum": "0dee17dfc0f3863c5de0783464b61fedfbcfe789d20268688cb98c6db2ca983c"}\n'
    )


ONE = [{"Timeline": 1, "Start-LSN": "0/9000028", "End-LSN": "0/9000100"}]


@pytest.mark.parametrize("version", [1, 2])
def test_parse_wal_ranges_from_the_manifest_tail(version):
    text = manifest(ONE, version=version)
    json.loads(text)  # the fixture is a real manifest
    assert parse_wal_ranges(text[-4096:]) == ONE
    assert parse_wal_ranges(text) == ONE


def test_parse_wal_ranges_of_a_backup_across_a_timeline_switch():
    # a backup taken from a standby while it followed a promotion: newest timeline first
    ranges = [
        {"Timeline": 2, "Start-LSN": "0/A0000D8", "End-LSN": "0/B000100"},
        {"Timeline": 1, "Start-LSN": "0/9000028", "End-LSN": "0/A0000D8"},
    ]
    assert parse_wal_ranges(manifest(ranges)[-4096:]) == ranges


def test_parse_wal_ranges_tail_that_starts_mid_line():
    text = manifest(ONE)
    tail = text[-300:]
    assert not tail.startswith("{")
    assert parse_wal_ranges(tail) == ONE


@pytest.mark.parametrize(
    "tail",
    [
        "",
        manifest(ONE)[:-300],  # cut before WAL-Ranges: a truncated manifest
        manifest(ONE).split('"WAL-Ranges"')[0] + '"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/90',
        '"WAL-Ranges": [ { "Timeline": 1, "Start-LSN": 0/9000028 } ]',
    ],
)
def test_parse_wal_ranges_refuses_a_tail_without_a_readable_range(tail):
    with pytest.raises(ValueError):
        parse_wal_ranges(tail)


# -- WAL long page header -------------------------------------------------------------------------------

XLP_LONG_HEADER = 0x0002
XLP_BKP_REMOVABLE = 0x0004
SYSID = 7712585929044878860


def long_header(
    magic: int,
    *,
    info: int = XLP_LONG_HEADER,
    tli: int = 1,
    pageaddr: int = 0x9000000,
    rem_len: int = 0,
    sysid: int = SYSID,
    seg_size: int = 16 << 20,
    blcksz: int = 8192,
) -> bytes:
    """XLogLongPageHeaderData: magic, info, tli, pageaddr, rem_len, (pad), sysid, seg_size, blcksz."""
    return struct.pack("<HHIQI4xQII", magic, info, tli, pageaddr, rem_len, sysid, seg_size, blcksz)


# The first 40 bytes of 000000010000000000000001 written by PostgreSQL 15.18 (Debian).
PG15_REAL = bytes.fromhex("10d1020001000000000000010000000000000000000000000c6665180a9c086b0000000100200000")


def test_header_layout_is_40_bytes():
    assert len(long_header(0xD110)) == 40


def test_parse_real_postgresql_15_header():
    assert parse_long_header(PG15_REAL) == {
        "magic": 0xD110,
        "timeline": 1,
        "system_identifier": SYSID,
        "segment_size": 16 << 20,
        "block_size": 8192,
        "major": 15,
    }


@pytest.mark.parametrize(
    ("magic", "major"),
    [
        # src/include/access/xlog_internal.h of each release
        (0xD106, 13),
        (0xD10D, 14),
        (0xD110, 15),
        (0xD113, 16),
        (0xD116, 17),
        (0xD118, 18),  # checked against PostgreSQL 18.6's installed xlog_internal.h
    ],
)
def test_parse_long_header_maps_the_magic_to_the_major(magic, major):
    hdr = parse_long_header(long_header(magic, tli=3, seg_size=64 << 20, blcksz=32768) + b"\0" * 100)
    assert hdr == {
        "magic": magic,
        "timeline": 3,
        "system_identifier": SYSID,
        "segment_size": 64 << 20,
        "block_size": 32768,
        "major": major,
    }
    assert XLOG_PAGE_MAGIC[magic] == major


def test_other_info_bits_are_fine():
    assert parse_long_header(long_header(0xD118, info=XLP_LONG_HEADER | XLP_BKP_REMOVABLE))["major"] == 18


def test_unknown_magic_is_major_zero():
    assert parse_long_header(long_header(0xD200))["major"] == 0


def test_short_header():
    with pytest.raises(ValueError, match="too short"):
        parse_long_header(long_header(0xD110)[:39])
    with pytest.raises(ValueError, match="too short"):
        parse_long_header(b"")


def test_a_page_without_the_long_header_flag():
    with pytest.raises(ValueError, match="no long header"):
        parse_long_header(long_header(0xD110, info=0))
    with pytest.raises(ValueError, match="no long header"):
        parse_long_header(b"\0" * 40)
