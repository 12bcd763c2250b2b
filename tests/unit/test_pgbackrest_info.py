"""pgBackRest's info files and barman's backup.info, parsed (pure).

The two pgBackRest files are verbatim copies of what pgBackRest 2.45 wrote for a real stanza.
"""

from __future__ import annotations

import pytest

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.formats._barman import _tablespaces
from pytest_pgrestore.formats._barman import parse_backup_info as parse_barman_info
from pytest_pgrestore.formats._pgbackrest_info import (
    UnsupportedRepository,
    parse_archive_info,
    parse_backup_info,
    parse_ini,
    parse_manifest,
)

ARCHIVE_INFO = """[backrest]
backrest-format=5
backrest-version="2.45"

[db]
db-id=1
db-system-id=7712587475783752568
db-version="15"

[db:history]
1={"db-id":7712587475783752568,"db-version":"15"}

[backrest]
backrest-checksum="4c6d6105eb8a0950458e631aa9c97d7b8b7866b5"
"""

BACKUP_INFO = """[backrest]
backrest-format=5
backrest-version="2.45"

[backup:current]
20261126-205829F={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000003","backup-archive-stop":"000000010000000000000003","backup-error":false,"backup-info-repo-size":2825788,"backup-info-repo-size-delta":2825788,"backup-info-size":23082888,"backup-info-size-delta":23082888,"backup-lsn-start":"0/3000028","backup-lsn-stop":"0/3000100","backup-timestamp-start":1795726709,"backup-timestamp-stop":1795726711,"backup-type":"full","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}
20261126-205829F_20261126-205832I={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000005","backup-archive-stop":"000000010000000000000005","backup-error":false,"backup-info-repo-size":2825845,"backup-info-repo-size-delta":743,"backup-info-size":23082889,"backup-info-size-delta":49418,"backup-lsn-start":"0/5000028","backup-lsn-stop":"0/5000100","backup-prior":"20261126-205829F","backup-reference":["20261126-205829F"],"backup-timestamp-start":1795726712,"backup-timestamp-stop":1795726713,"backup-type":"incr","db-id":1,"option-archive-check":true,"option-archive-copy":false,"option-backup-standby":false,"option-checksum-page":true,"option-compress":true,"option-hardlink":false,"option-online":true}

[db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7712587475783752568
db-version="15"

[db:history]
1={"db-catalog-version":202209061,"db-control-version":1300,"db-system-id":7712587475783752568,"db-version":"15"}

[backrest]
backrest-checksum="9eecca13cc68ead511405c2bf1598f3ce494bf92"
"""


def test_checksums_of_real_info_files_verify():
    assert parse_ini(ARCHIVE_INFO.encode(), "archive.info").checksum_ok
    assert parse_ini(BACKUP_INFO.encode(), "backup.info").checksum_ok


def test_one_changed_value_fails_the_checksum():
    bad = BACKUP_INFO.replace('"backup-lsn-stop":"0/3000100"', '"backup-lsn-stop":"0/3000101"')
    assert bad != BACKUP_INFO
    assert not parse_ini(bad.encode(), "backup.info").checksum_ok


def test_missing_checksum_is_not_ok():
    text = ARCHIVE_INFO[: ARCHIVE_INFO.rindex("[backrest]")]
    assert not parse_ini(text.encode(), "archive.info").checksum_ok


def test_backup_info_entries_and_db_history():
    backups, history = parse_backup_info(parse_ini(BACKUP_INFO.encode(), "backup.info"))
    assert [(b.label, b.type, b.prior, b.references) for b in backups] == [
        ("20261126-205829F", "full", None, []),
        ("20261126-205829F_20261126-205832I", "incr", "20261126-205829F", ["20261126-205829F"]),
    ]
    assert backups[1].lsn_start == "0/5000028" and backups[1].archive_start == "000000010000000000000005"
    assert not any(b.block_incremental for b in backups)
    assert history[1]["db-version"] == "15"


def test_archive_ids_oldest_first():
    assert parse_archive_info(parse_ini(ARCHIVE_INFO.encode(), "archive.info")) == ["15-1"]


def test_block_incremental_is_seen_in_backup_info():
    text = BACKUP_INFO.replace('"backup-info-repo-size":2825788,', '"backup-info-repo-size":2825788,'
                               '"backup-info-repo-size-map":100,"backup-info-repo-size-map-delta":100,', 1)
    backups, _ = parse_backup_info(parse_ini(text.encode(), "backup.info"))
    assert [b.block_incremental for b in backups] == [True, False]


def test_encrypted_file_is_refused_by_name():
    with pytest.raises(UnsupportedRepository, match="encryption is not supported: backup/main/backup.info"):
        parse_ini(b"Salted__garbage", "backup/main/backup.info")


def test_malformed_line_is_corrupt():
    with pytest.raises(CorruptBackup, match="malformed line"):
        parse_ini(b"[backrest]\nno equals sign here\n", "backup.info")


MANIFEST = """[backup]
backup-label="L"

[backup:option]
option-compress=true

[backup:target]
pg_data={"path":"/data","type":"path"}
pg_tblspc/16385={"path":"/ts","tablespace-id":"16385","tablespace-name":"ts","type":"link"}

[target:file]
pg_data/PG_VERSION={"checksum":"aa","size":3,"timestamp":1}
pg_data/base/1/1={"bni":1,"checksum":"bb","reference":"F","repo-size":20,"size":8192,"timestamp":1}
pg_data/global/pg_control={"bni":1,"bno":20,"checksum":"cc","repo-size":30,"size":8192,"timestamp":1}

[target:path]
pg_data={}
pg_tblspc={}
"""


def test_manifest_files_references_bundles_and_links():
    m = parse_manifest(parse_ini(MANIFEST.encode(), "backup.manifest"), "backup.manifest")
    assert m.compress_type == "gz"  # option-compress=true before compress-type existed
    by_name = {f.name: f for f in m.files}
    assert by_name["pg_data/base/1/1"].reference == "F"
    assert (by_name["pg_data/base/1/1"].bundle_id, by_name["pg_data/base/1/1"].bundle_offset) == (1, 0)
    assert by_name["pg_data/global/pg_control"].bundle_offset == 20
    assert by_name["pg_data/PG_VERSION"].bundle_id is None
    assert list(m.links) == ["pg_tblspc/16385"]


def test_manifest_with_block_incremental_file_is_refused():
    text = MANIFEST.replace('"size":3,', '"size":3,"bi":1,"bim":10,')
    with pytest.raises(UnsupportedRepository, match="block incremental"):
        parse_manifest(parse_ini(text.encode(), "backup.manifest"), "backup.manifest")


def test_barman_backup_info():
    text = ("backup_label='START WAL LOCATION: 0/2000028'\nbegin_xlog=0/2000028\nstatus=DONE\n"
            "tablespaces=[('ts1', 16385, '/srv/ts1')]\nversion=150018\n")
    info = parse_barman_info(text)
    assert info["begin_xlog"] == "0/2000028" and info["status"] == "DONE" and info["version"] == "150018"
    assert _tablespaces(info["tablespaces"]) == {"16385": "/srv/ts1"}
    assert _tablespaces("None") == {}
