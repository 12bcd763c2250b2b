"""The disk pre-flight's arithmetic: manifest sizes read as a stream, the sums and the message."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pytest_pgrestore.restore._diskcheck import DiskSpaceError, Need, check_disk, manifest_size, spool_bytes


def manifest(sizes: list[int]) -> bytes:
    files = [
        {
            "Path": f"base/5/{16384 + i}",
            "Size": s,
            "Last-Modified": "2026-11-26 20:40:00 GMT",
            "Checksum-Algorithm": "CRC32C",
            "Checksum": "deadbeef",
        }
        for i, s in enumerate(sizes)
    ]
    doc = {
        "PostgreSQL-Backup-Manifest-Version": 1,
        "Files": files,
        "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
    }
    # PostgreSQL writes one file per line, "Size": N with a space
    return json.dumps(doc, indent=None).replace("}, {", "},\n{").encode()


class Trickle(io.RawIOBase):
    """Hands out at most ``n`` bytes per read: chunk boundaries fall everywhere."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n, self.pos = data, n, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + min(self.n, size if size > 0 else self.n)]
        self.pos += len(chunk)
        return chunk


@pytest.mark.parametrize("piece", [1, 7, 29, 4096, 1 << 20])
def test_manifest_size_sums_every_file_across_read_boundaries(piece):
    sizes = [(i * 7919) % 10_000_000 for i in range(3000 if piece > 7 else 300)]
    assert manifest_size(Trickle(manifest(sizes), piece)) == sum(sizes)


def test_manifest_of_several_megabytes():
    sizes = list(range(1, 60_000))
    data = manifest(sizes)
    assert len(data) > 5 << 20
    assert manifest_size(io.BytesIO(data)) == sum(sizes)


def test_spool_window_is_bounded_by_the_plan():
    assert spool_bytes(3, 16 << 20) == (3 * (16 << 20), "3 × 16.0 MiB WAL segments")
    big, how = spool_bytes(10_000, 16 << 20)
    assert big == 69 * (16 << 20) and how.startswith("69 × ")
    # the downloads in flight are the run's --restore-fetch-concurrency
    assert spool_bytes(10_000, 16 << 20, concurrency=8)[0] == 73 * (16 << 20)


def test_too_little_space_names_what_is_free_and_what_is_needed(tmp_path: Path):
    need = Need(
        1 << 50, "the sum of Size in basebackups/b/backup_manifest", 1 << 30, "64 × 16.0 MiB WAL segments"
    )
    with pytest.raises(DiskSpaceError) as err:
        check_disk(need, workdir=tmp_path / "not" / "yet", backup_name="b")
    text = str(err.value)
    assert f"{tmp_path} has " in text and " free, the restore needs 1126.4 TiB" in text
    assert "backup b uncompressed 1024.0 TiB (the sum of Size in basebackups/b/backup_manifest)" in text
    assert "WAL spool window 1.0 GiB (64 × 16.0 MiB WAL segments) + 10%" in text


def test_enough_space_passes(tmp_path: Path):
    check_disk(Need(1, "x", 1, "y"), workdir=tmp_path, backup_name="b")
