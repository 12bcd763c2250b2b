"""barman-cloud: what backup.info implies (data.tar and its numbered parts, one tar per tablespace)
is checked against the listing; unfinished backups are listed, never chosen (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_pgrestore.formats._barman import BarmanFormat
from pytest_pgrestore.formats._base import IncompleteBackup
from pytest_pgrestore.store._local import LocalStore

INFO = """backup_label=None
begin_offset=40
begin_time=2026-01-01 10:00:00.000000+00:00
begin_wal=000000010000000000000002
begin_xlog=0/2000028
end_time=2026-01-01 10:00:05.000000+00:00
end_wal=000000010000000000000002
end_xlog=0/2000100
status={status}
systemid=7000000000000000001
tablespaces=[('extra', 16385, '/srv/ts')]
timeline=1
version=150004
xlog_segment_size=16777216
"""


def _backup(root: Path, backup_id: str, tars: list[str], status: str | None = "DONE") -> None:
    d = root / "pg" / "base" / backup_id
    d.mkdir(parents=True)
    for t in tars:
        (d / t).write_bytes(b"x")
    if status is not None:
        (d / "backup.info").write_text(INFO.format(status=status))


@pytest.fixture
def dest(tmp_path):
    (tmp_path / "pg" / "wals").mkdir(parents=True)
    return tmp_path


def _catalog(root: Path):
    fmt = BarmanFormat(LocalStore(root))
    return fmt, fmt.catalog()


def test_complete_backup_with_parts_and_tablespace_passes(dest):
    _backup(dest, "20260101T100000", ["data.tar.gz", "data_0001.tar.gz", "16385.tar.gz"])
    fmt, cat = _catalog(dest)
    (b,) = cat.backups
    fmt.check_complete(b)
    assert "refusal" not in b.details


@pytest.mark.parametrize("tars, gone", [
    (["data.tar.gz", "data_0002.tar.gz", "16385.tar.gz"], "pg/base/20260101T100000/data_0001.tar.gz"),
    (["data.tar.gz", "data_0001.tar.gz"], "pg/base/20260101T100000/16385.tar.gz"),
    (["16385.tar"], "pg/base/20260101T100000/data.tar"),
])
def test_twin_missing_part_or_tablespace_tar_is_named(dest, tars, gone):
    _backup(dest, "20260101T100000", tars)
    fmt, cat = _catalog(dest)
    (b,) = cat.backups  # listed: choosing it is what fails, before any download
    with pytest.raises(IncompleteBackup) as err:
        fmt.check_complete(b)
    assert gone in str(err.value)
    assert b.details["refusal"] is err.value


def test_unfinished_backups_are_listed_not_chosen(dest):
    _backup(dest, "20260101T100000", ["data.tar.gz", "16385.tar.gz"])
    _backup(dest, "20260102T100000", ["data.tar.gz"], status=None)  # backup.info is uploaded last
    _backup(dest, "20260103T100000", ["data.tar.gz", "16385.tar.gz"], status="STARTED")
    _backup(dest, "20260104T100000", ["data.tar.gz", "16385.tar.gz"], status="FAILED")
    _, cat = _catalog(dest)
    assert [b.name for b in cat.backups] == ["20260101T100000"]
    assert [(u.name, u.state) for u in cat.unfinished] == [
        ("20260102T100000", "in progress"), ("20260103T100000", "in progress"), ("20260104T100000", "failed")]
