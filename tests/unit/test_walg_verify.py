"""wal-verify's integrity and timeline checks over a listing, against WAL-G's own sample output."""

from __future__ import annotations

from datetime import datetime, timezone

from pytest_pgrestore.formats._catalog import Backup, WalArchive, WalSegment
from pytest_pgrestore.formats._wal import TimelineEntry
from pytest_pgrestore.formats._walg_verify import wal_verify

SIZE = 16 << 20
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)


def archive(segments: dict[int, list[int]], histories=None) -> WalArchive:
    wal = WalArchive(segment_size=SIZE)
    for tli, segnos in segments.items():
        wal.segments[tli] = {s: WalSegment(tli, s, f"wal_005/{tli}-{s}", 1, NOW) for s in segnos}
    for tli, entries in (histories or {}).items():
        wal.histories[tli] = entries
        wal.history_keys[tli] = f"wal_005/{tli:08X}.history.lz4"
    return wal


def backup(name_tli: int, segno: int, permanent=False) -> Backup:
    return Backup(name=f"base_{name_tli:08X}{segno:016X}", format="walg", start_lsn=segno * SIZE + 0x28,
                  stop_lsn=segno * SIZE + 0x100, timeline=name_tli, details={"permanent": permanent})


def test_shape_of_wal_g_sample_lost_start_segment_then_found_across_a_switch():
    """cmd/pg/exporter/testdata/wal-verify.json: the earliest backup's own start segment LOST,
    then FOUND on timeline 0x43 up to the switch, FOUND on 0x44 after it."""
    switch = 0x20 * SIZE + 0x100  # timeline 0x44 forks inside segment 0x20
    wal = archive({0x43: list(range(0x11, 0x20)), 0x44: list(range(0x20, 0x28))},
                  {0x44: [TimelineEntry(0x43, switch)]})
    report = wal_verify(wal, [backup(0x43, 0x10)])
    got = [(r.timeline_id, r.start_segment[-2:], r.end_segment[-2:], r.segments_count, r.status) for r in report.runs]
    assert got == [(0x43, "10", "10", 1, "MISSING_LOST"), (0x43, "11", "1F", 15, "FOUND"),
                   (0x44, "20", "27", 8, "FOUND")]
    assert report.integrity_status == "FAILURE"
    assert report.as_json()["timeline"] == {"status": "OK", "details": {"current_timeline_id": 0x44,
                                                                         "highest_storage_timeline_id": 0x44}}


def test_recent_gap_is_uploading_older_gap_is_lost():
    wal = archive({1: [s for s in range(2, 40) if s not in (38, 10)]})
    report = wal_verify(wal, [backup(1, 2)], upload_window=16)
    statuses = {r.start_segment[-2:]: r.status for r in report.missing}
    assert statuses == {"26": "MISSING_UPLOADING", "0A": "MISSING_LOST"}
    assert report.integrity_status == "FAILURE"
    assert wal_verify(archive({1: [s for s in range(2, 40) if s != 38]}), [backup(1, 2)]).integrity_status == "WARNING"


def test_permanent_backups_do_not_stop_the_scan_and_no_backup_scans_to_one():
    wal = archive({1: list(range(5, 12))})
    assert wal_verify(wal, [backup(1, 8), backup(1, 5, permanent=True)]).stop_backup == "base_000000010000000000000008"
    report = wal_verify(wal, [], upload_window=2)
    assert report.stop_backup is None and report.runs[0].status == "MISSING_LOST"
    assert report.runs[0].start_segment.endswith("01")
    assert report.integrity_status == "WARNING"  # LOST before anything FOUND, and no backup: a warning


def test_a_switch_not_from_our_history_is_ignored_when_the_segment_exists():
    wal = archive({2: list(range(3, 10))}, {2: [TimelineEntry(1, 6 * SIZE)]})
    report = wal_verify(wal, [backup(2, 3)])
    assert [(r.timeline_id, r.status) for r in report.runs] == [(2, "FOUND")]


def test_pgp_and_kms_heads_are_named_and_random_libsodium_headers_are_not():
    import os

    from pytest_pgrestore.formats._walg_layout import pgp_or_kms

    pkesk = bytes([0xC1, 0x4C, 3]) + bytes(range(8)) + bytes([1]) + bytes(100)  # v3 PKESK, RSA
    assert pgp_or_kms(pkesk) == "OpenPGP (WALG_PGP_KEY)"
    assert "KMS" in pgp_or_kms(b"\x01\x02\x02\x00x" + bytes(200))
    assert not any(pgp_or_kms(os.urandom(512)) for _ in range(5000))
