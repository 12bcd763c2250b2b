"""wal.py: segment names <-> (timeline, segno) for every segment size, inferring the segment
size from what PostgreSQL writes, and timeline history files."""

from __future__ import annotations

import pytest

from pytest_pgrestore.formats._basebackup import parse_backup_history
from pytest_pgrestore.formats._wal import (
    BACKUP_HISTORY_RE,
    HISTORY_RE,
    SegmentName,
    TimelineEntry,
    infer_segment_size,
    parse_history,
    parse_segment_name,
    segment_name,
    segment_start,
    segments_per_xlogid,
    segno_of,
)
from pytest_pgrestore.settings._target import parse_lsn

MB = 1 << 20
GB = 1 << 30


# -- segment names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "per"), [(MB, 0x1000), (2 * MB, 0x800), (16 * MB, 0x100), (64 * MB, 0x40), (GB, 4)]
)
def test_segments_per_xlogid(size, per):
    assert segments_per_xlogid(size) == per


# (timeline, segno, size, name): each name as PostgreSQL's XLogFileName prints it
NAMES = [
    (1, 0, 16 * MB, "000000010000000000000000"),
    (1, 9, 16 * MB, "000000010000000000000009"),
    (1, 0xFF, 16 * MB, "0000000100000000000000FF"),
    (1, 0x100, 16 * MB, "000000010000000100000000"),
    (2, 0x1FF, 16 * MB, "0000000200000001000000FF"),
    (0xA, 0xAB * 0x100 + 0xCD, 16 * MB, "0000000A000000AB000000CD"),
    (0xFFFFFFFF, 0xFFFFFFFF * 0x100 + 0xFF, 16 * MB, "FFFFFFFFFFFFFFFF000000FF"),
    (1, 0x90, MB, "000000010000000000000090"),
    (1, 0xFFF, MB, "000000010000000000000FFF"),
    (1, 0x1000, MB, "000000010000000100000000"),
    (3, 0x2ABC, MB, "000000030000000200000ABC"),
    (1, 0x4B, 64 * MB, "00000001000000010000000B"),
    (1, 3, GB, "000000010000000000000003"),
    (1, 4, GB, "000000010000000100000000"),
    (1, 5 * 4 + 2, GB, "000000010000000500000002"),
]


@pytest.mark.parametrize(("tli", "segno", "size", "name"), NAMES)
def test_segment_name_round_trip(tli, segno, size, name):
    assert segment_name(tli, segno, size) == name
    assert parse_segment_name(name, size) == SegmentName(tli, segno)
    assert SegmentName(tli, segno).name(size) == name


@pytest.mark.parametrize("size", [MB, 16 * MB, GB])
def test_lsn_to_segment_and_back(size):
    lsn = 0x1_2345_6789
    segno = segno_of(lsn, size)
    assert segment_start(segno, size) <= lsn < segment_start(segno + 1, size)
    assert segment_start(segno, size) % size == 0
    # the name of the segment holding an LSN encodes the LSN's high half as its middle part
    assert parse_segment_name(segment_name(1, segno, size), size).segno == segno
    assert segment_name(1, segno, size)[8:16] == "00000001"


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("000000010000000000000100", 16 * MB),  # seg part 0x100: only 0x00-0xFF exist at 16 MB
        ("0000000100000000000000FF", 64 * MB),  # 64 MB: 0x00-0x3F
        ("000000010000000000001000", MB),  # 1 MB: 0x000-0xFFF
        ("000000010000000000000004", GB),  # 1 GB: 0-3
        ("0000000100000000FFFFFFFF", 16 * MB),
    ],
)
def test_segment_part_out_of_range_for_the_size(name, size):
    with pytest.raises(ValueError, match="impossible for"):
        parse_segment_name(name, size)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "00000001000000000001000",  # 23 characters
        "0000000100000000000000010",  # 25 characters
        "00000001000000000000000a",  # PostgreSQL writes upper case
        "00000001000000000000000G",
        "000000010000000000000001.partial",
        "000000010000000000000001.00000028.backup",
        "00000002.history",
        " 000000010000000000000001",
        "000000010000000000000001\n",
    ],
)
def test_not_a_segment_name(name):
    with pytest.raises(ValueError, match="not a WAL segment name"):
        parse_segment_name(name, 16 * MB)


def test_segment_names_sort_like_segments():
    names = [segment_name(t, s, 16 * MB) for t, s in [(1, 0xFF), (1, 0x100), (2, 3), (1, 2)]]
    assert sorted(names) == [segment_name(t, s, 16 * MB) for t, s in [(1, 2), (1, 0xFF), (1, 0x100), (2, 3)]]
    assert SegmentName(1, 0x100) > SegmentName(1, 0xFF)
    assert SegmentName(2, 0) > SegmentName(1, 0x100)


def test_history_and_backup_file_patterns():
    assert HISTORY_RE.match("00000002.history").group(1) == "00000002"
    assert not HISTORY_RE.match("2.history")
    assert not HISTORY_RE.match("00000002.history.tmp")
    m = BACKUP_HISTORY_RE.match("000000010000000000000009.00000028.backup")
    assert m.groups() == ("000000010000000000000009", "00000028")
    assert not BACKUP_HISTORY_RE.match("000000010000000000000009.backup")


# -- segment size from backup_label / .backup lines -----------------------------------------


def _location(line: str) -> tuple[int, str]:
    fields = parse_backup_history(line)
    return parse_lsn(fields["START LSN"]), fields["START FILE"]


@pytest.mark.parametrize(
    ("line", "size"),
    [
        # initdb --wal-segsize=1: LSN 0/9000028 lies in segment 0x90
        ("START WAL LOCATION: 0/9000028 (file 000000010000000000000090)", MB),
        ("START WAL LOCATION: 0/9000028 (file 000000010000000000000009)", 16 * MB),
        ("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)", 16 * MB),
        ("START WAL LOCATION: 3/B7000060 (file 0000000200000003000000B7)", 16 * MB),
        ("START WAL LOCATION: 0/9000028 (file 000000010000000000000002)", 64 * MB),
        ("START WAL LOCATION: 1/2C000028 (file 00000001000000010000000B)", 64 * MB),
        ("START WAL LOCATION: 0/C0000028 (file 000000010000000000000003)", GB),
    ],
)
def test_infer_segment_size_from_backup_label(line, size):
    assert infer_segment_size(*_location(line)) == size


def test_infer_segment_size_when_only_the_header_can_tell():
    # The first MB of a log id names the same file for every segment size: guessing 1 MB
    # would make every later segment name wrong, so the caller must read a WAL header.
    lsn, name = _location("START WAL LOCATION: 1/28 (file 000000010000000100000000)")
    assert infer_segment_size(lsn, name) is None


@pytest.mark.parametrize(
    ("lsn", "name"),
    [
        (0x9000028, "00000001000000000000000A"),  # the LSN is not in that file at any size
        (0x1_0000_0028, "000000010000000000000009"),
        (0x9000028, "garbage"),
    ],
)
def test_infer_segment_size_refuses_disagreeing_label(lsn, name):
    with pytest.raises(ValueError):
        infer_segment_size(lsn, name)


# -- timeline history files -----------------------------------------------------------------


def test_parse_history_as_postgresql_writes_it():
    text = "1\t0/3000000\tno recovery target specified\n"
    assert parse_history(text) == [TimelineEntry(1, 0x3000000, "no recovery target specified")]


def test_parse_history_of_a_third_timeline():
    text = (
        "1\t0/3000000\tno recovery target specified\n"
        "\n"
        "2\t0/50000D8\tbefore 2026-11-26 20:40:00.5+00\n"
        '3\t1/A0000148\tat restore point "before_migration"\n'
    )
    assert parse_history(text) == [
        TimelineEntry(1, 0x3000000, "no recovery target specified"),
        TimelineEntry(2, 0x50000D8, "before 2026-11-26 20:40:00.5+00"),
        TimelineEntry(3, 0x1_A000_0148, 'at restore point "before_migration"'),
    ]


def test_parse_history_skips_comments_blank_lines_and_crlf():
    text = "# written by hand\n\n   \n  # indented comment\r\n1\t0/3000000\treason\r\n\n"
    assert parse_history(text) == [TimelineEntry(1, 0x3000000, "reason")]


def test_parse_history_without_reason_and_with_spaces():
    assert parse_history("1\t0/3000000") == [TimelineEntry(1, 0x3000000, "")]
    assert parse_history("1 0/3000000 after transaction 729") == [
        TimelineEntry(1, 0x3000000, "after transaction 729")
    ]


def test_parse_empty_history():
    assert parse_history("") == []
    assert parse_history("# nothing\n\n") == []


@pytest.mark.parametrize(
    "text",
    [
        "1\n",  # PostgreSQL: "Expected a write-ahead log switchpoint location."
        "x\t0/3000000\treason\n",  # "Expected a numeric timeline ID."
        "-1\t0/3000000\treason\n",
        "1\t3000000\treason\n",
        "1\t0/3000000000\treason\n",
        "1\tG/0\treason\n",
        "2\t0/3000000\ta\n1\t0/5000000\tb\n",  # "Timeline IDs must be in increasing sequence."
        "1\t0/3000000\ta\n1\t0/5000000\tb\n",
    ],
)
def test_parse_history_refuses_malformed_lines(text):
    with pytest.raises(ValueError):
        parse_history(text)
