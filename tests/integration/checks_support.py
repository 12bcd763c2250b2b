"""Real backups for the built-in checks: the demo schema, optionally without a manifest.

``build_demo_backup`` makes what the demo makes (users/models/jobs, then ``activity`` commits
before and after one ``pg_basebackup -Ft``), and records where each relation lives on disk so a
test can damage one page of it inside ``base.tar``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from pytest_pgrestore.demo._source import SourceCluster

PAGE = 8192


@dataclass
class DemoBackup:
    repo: Path
    backup: str
    files: dict[str, str] = field(default_factory=dict)  # relation name -> path in PGDATA (base/5/16384)

    @property
    def url(self) -> str:
        return f"file://{self.repo}"

    @property
    def base_tar(self) -> Path:
        return self.repo / "basebackups" / self.backup / "base.tar"


def build_demo_backup(root: Path, *, data_checksums: bool = True, manifest: bool = True) -> DemoBackup:
    """users/models/jobs (never written again after the backup, so replay leaves their pages as
    the backup has them) and ``activity`` written before and after the backup."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    with SourceCluster(root / "src", repo=root / "repo", major=15, data_checksums=data_checksums) as src:
        src.demo_schema()
        src.commit_rows(2, table="activity", gap=0)
        with src.connect() as conn:
            files = dict(conn.execute(
                "select relname, pg_relation_filepath(oid) from pg_class "
                "where relname in ('users', 'users_pkey', 'users_email_key', 'jobs', 'jobs_pkey')").fetchall())
        info = src.backup()
        src.commit_rows(2, table="activity", gap=0)
        src.switch_wal()
    demo = DemoBackup(repo=root / "repo", backup=info.name, files=files)
    if not manifest:  # what pg_basebackup --no-manifest leaves: pg_verifybackup has nothing to check
        (demo.repo / "basebackups" / info.name / "backup_manifest").unlink()
    return demo


def copy_backup(demo: DemoBackup, dest: Path) -> DemoBackup:
    shutil.copytree(demo.repo, dest / "repo")
    dest.chmod(0o755)
    return DemoBackup(repo=dest / "repo", backup=demo.backup, files=dict(demo.files))


def page_offset(base_tar: Path, member_name: str, block: int) -> int:
    """Offset in ``base_tar`` of block ``block`` of the relation file ``member_name``."""
    with tarfile.open(base_tar) as tar:
        member = tar.getmember(member_name)
    assert member.size >= (block + 1) * PAGE, f"{member_name} has {member.size // PAGE} blocks"
    return member.offset_data + block * PAGE


def flip(path: Path, offset: int, xor: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ xor]))


def read_page(path: Path, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(PAGE)


def tuple_data_offset(page: bytes, item: int = 1) -> int:
    """Offset in ``page`` of the data of line pointer ``item`` (1-based): past its tuple header."""
    pd_lower = int.from_bytes(page[12:14], "little")
    assert 24 + 4 * item <= pd_lower, f"page has {(pd_lower - 24) // 4} items"
    lp = int.from_bytes(page[24 + 4 * (item - 1): 28 + 4 * (item - 1)], "little")
    return lp & 0x7FFF  # lp_off: the first 15 bits


def damage(demo: DemoBackup, relation: str, *, block: int, where: str) -> int:
    """Flip one byte of ``relation``'s block inside base.tar; returns its offset in the tar.

    ``where``: "page" (the middle of the page: any checksum catches it), "index key" (one bit of
    a key byte of the first index tuple, "alice" → "amice": still in order, so only amcheck's
    heapallindexed can tell, which is what a cluster without checksums has to rely on).
    """
    path = demo.files[relation]
    start = page_offset(demo.base_tar, path, block)
    if where == "page":
        offset = start + PAGE // 2
    elif where == "index key":
        page = read_page(demo.base_tar, start)
        # IndexTupleData is 8 bytes (t_tid, t_info); the text key starts with a 1-byte varlena header
        offset = start + tuple_data_offset(page) + 8 + 1 + 1
    else:
        raise ValueError(where)
    flip(demo.base_tar, offset, 0xFF if where == "page" else 0x01)
    os.sync()
    return offset
