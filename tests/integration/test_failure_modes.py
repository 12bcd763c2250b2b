"""Failure modes against real backups in SeaweedFS, each next to what passes.

* the read-only key restores, and the store's listing is identical before and after — the
  product's own evidence says no object of the restored server's new timeline appeared;
* hostile tars in a real store (``..``, absolute paths, links out of PGDATA) are refused, and a
  tablespace link inside the archive is never followed: tablespaces go under the run dir;
* a truncated object fails naming its key;
* a restore point that is in no replayed WAL ends early naming it, after trying every backup;
* the harness failing to fetch a segment replay needs (the helper raises) aborts recovery.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import psycopg
import pytest
from it_support import copy_repo, our_postgres_processes, run_dirs

from pytest_pgrestore.errors import CorruptBackup, RestoreFailed
from pytest_pgrestore.restore._instance import Hooks
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

BUCKET = "drills"


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


def listing(seaweed, prefix: str) -> dict[str, tuple]:
    """Every object under ``prefix`` as the admin sees it: key → (size, ETag, LastModified)."""
    client = seaweed.admin_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {
            o["Key"]: (o["Size"], o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", ())
        }
    finally:
        client.close()


# -- read-only access ---------------------------------------------------------------------------
def test_read_only_key_restores_and_the_store_is_unchanged(pg15, seaweed, settings_factory):
    before = listing(seaweed, "pg15/")
    assert pg15.s3_env["AWS_ACCESS_KEY_ID"] == seaweed.readonly.access_key
    with Restorer(settings_factory(pg15.s3_url, env=pg15.s3_env)).restore() as inst:
        with inst.connect() as conn:  # the drills' role reads every row...
            assert conn.execute("select count(*) from t").fetchone()[0] == pg15.total_rows
        # ... the superuser writes and switches WAL: what a leaked archive_command would push
        with psycopg.connect(inst.dsn_for(user=inst.user)) as conn:
            conn.execute("create table written_after_restore as select 1 as x")
            conn.execute("select pg_switch_wal()")
        result = inst.result
    assert result.outcome == "REACHED"
    tli = result.evidence["new_timeline"]
    assert tli == result.timeline + 1
    assert result.evidence["store_untouched"].startswith(f"yes: no object of timeline {tli} ")
    assert listing(seaweed, "pg15/") == before


# -- untrusted archives -------------------------------------------------------------------------
def _member(name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o600
    return info, io.BytesIO(data) if data else None


def copy_with_base_tar(pg15, seaweed, name: str, rewrite) -> str:
    """A copy of the pg15 upload (server-side) whose newest base.tar is ``rewrite(original bytes)``."""
    base = f"basebackups/{pg15.backups['b2'].name}/base.tar"
    client = seaweed.admin_client()
    try:
        for key in listing(seaweed, "pg15/"):
            rel = key.removeprefix("pg15/")
            if rel != base:
                client.copy_object(
                    Bucket=BUCKET, Key=f"{name}/{rel}", CopySource={"Bucket": BUCKET, "Key": key}
                )
        client.put_object(Bucket=BUCKET, Key=f"{name}/{base}", Body=rewrite((pg15.repo / base).read_bytes()))
    finally:
        client.close()
    return f"s3://{BUCKET}/{name}"


def hostile_copy(pg15, seaweed, name: str, extra: list[tuple]) -> str:
    """The pg15 archive with ``extra`` members written first into the newest backup's base.tar."""

    def rewrite(original: bytes) -> bytes:
        buf = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(original)) as src,
            tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as out,
        ):
            for info, data in extra:
                out.addfile(info, data)
            for m in src.getmembers():
                out.addfile(m, src.extractfile(m) if m.isfile() else None)
        return buf.getvalue()

    return copy_with_base_tar(pg15, seaweed, f"hostile-{name}", rewrite)


CANARY = Path(f"/tmp/pgr-hostile-canary-{os.getpid()}")

HOSTILE = {
    "dotdot": (
        [_member("../../../../../../.." + str(CANARY), data=b"escaped")],
        "points outside the restore directory",
    ),
    "absolute": ([_member(str(CANARY), data=b"escaped")], "points outside the restore directory"),
    "symlink-out": ([_member("global/evil", kind=tarfile.SYMTYPE, link="/etc")], "unexpected symlink"),
    "hardlink-out": ([_member("global/evil", kind=tarfile.LNKTYPE, link="/etc/passwd")], "has refused type"),
    "device": ([_member("global/evil", kind=tarfile.CHRTYPE)], "has refused type"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_twin_hostile_tar_member_is_refused_naming_it(pg15, seaweed, settings_factory, case):
    extra, says = HOSTILE[case]
    url = hostile_copy(pg15, seaweed, case, extra)
    with pytest.raises(CorruptBackup) as err:
        with Restorer(settings_factory(url, env=pg15.s3_env)).restore():
            pass
    message = str(err.value)
    assert pg15.backups["b2"].name in message and "base.tar" in message and says in message
    assert extra[0][0].name in message
    assert not CANARY.exists()


def test_tablespace_link_in_the_archive_is_never_followed(pg15, seaweed, settings_factory):
    outside = Path(f"/tmp/pgr-hostile-tablespace-{os.getpid()}")
    link = _member("pg_tblspc/16999", kind=tarfile.SYMTYPE, link=str(outside))
    url = hostile_copy(pg15, seaweed, "tablespace-link", [link])
    with Restorer(settings_factory(url, "immediate", env=pg15.s3_env)).restore() as inst:
        target = os.readlink(inst.run_dir / "pgdata" / "pg_tblspc" / "16999")
        assert target == str(inst.run_dir / "tablespaces" / "16999")
        assert inst.result.outcome == "REACHED"
    assert not outside.exists()


# -- damaged objects ----------------------------------------------------------------------------
def test_twin_truncated_object_fails_naming_its_key(pg15, seaweed, settings_factory):
    copy_with_base_tar(pg15, seaweed, "truncated", lambda data: data[: len(data) * 2 // 3])
    with pytest.raises(CorruptBackup) as err:
        with Restorer(settings_factory(f"s3://{BUCKET}/truncated", env=pg15.s3_env)).restore():
            pass
    message = str(err.value)
    assert f"basebackups/{pg15.backups['b2'].name}/base.tar" in message
    assert "truncated" in message


# -- what only replay can tell --------------------------------------------------------------------
def test_twin_restore_point_in_no_replayed_wal_ends_early_naming_it(pg15, settings_factory):
    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(pg15.file_url, "name:no_such_point")).restore():
            pass
    result = err.value.result
    assert result.outcome == "ENDED_EARLY"
    assert "restore point 'no_such_point' was not found in the WAL replayed from this backup" in str(
        err.value
    )
    assert [a.backup for a in result.attempts] == [pg15.backups["b2"].name, pg15.backups["b1"].name]


def test_twin_a_helper_that_raises_aborts_recovery(pg15, settings_factory):
    newest = max(p.name for p in (pg15.repo / "wal").iterdir() if len(p.name) == 24)

    def broken(name: str) -> None:
        if name == newest:
            raise OSError("the store's connection pool is exhausted")

    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(pg15.file_url), hooks=Hooks(before_deliver=broken)).restore():
            pass
    assert err.value.result.outcome == "RESTORE_COMMAND_ABORT"
    assert f"{newest}" in str(err.value) and "the store's connection pool is exhausted" in str(err.value)


def test_twin_damaged_record_in_an_archived_segment_is_corrupt_wal(pg15, settings_factory, workroot):
    """A byte flipped inside the data of a heap insert in the newest segment (the basebackup
    layout carries no per-segment checksum): PostgreSQL's record CRC catches it during replay."""
    repo = copy_repo(pg15, workroot / "corrupt-wal")
    victim = max(p for p in (repo / "wal").iterdir() if len(p.name) == 24)
    dump = subprocess.run(
        [f"/usr/lib/postgresql/{pg15.major}/bin/pg_waldump", str(victim)], capture_output=True, text=True
    ).stdout
    m = re.search(
        r"rmgr: Heap\s+len \(rec/tot\):\s+\d+/\s*(\d+), tx:\s+\d+, lsn: ([0-9A-F]+)/([0-9A-F]+), "
        r"prev [0-9A-F/]+, desc: INSERT",
        dump,
    )
    assert m, dump
    total, offset = int(m.group(1)), int(m.group(3), 16) % (16 << 20)
    with open(victim, "r+b") as f:
        f.seek(offset + total - 2)  # the inserted tuple's last bytes: covered by the record's CRC only
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x55]))
    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(f"file://{repo}")).restore():
            pass
    assert err.value.result.outcome == "CORRUPT_WAL", str(err.value)
    assert "replay met a damaged WAL record: " in str(err.value)
    lsn = f"{int(m.group(2), 16):X}/{int(m.group(3), 16):X}"
    assert f"incorrect resource manager data checksum in record at {lsn}" in str(err.value)
