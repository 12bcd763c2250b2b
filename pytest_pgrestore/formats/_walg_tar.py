"""Extract one WAL-G tar stream into PGDATA, with WAL-G's conventions and its page increments.

What differs from a ``pg_basebackup`` tar (WAL-G source in parentheses):

* member names start with ``/`` and the root directory is a member named ``/``
  (``internal/bundle.go`` ``GetFileRelPath``); ``backup_label`` and ``tablespace_map`` have no
  leading slash (``bundle.go`` ``uploadLabelFiles``);
* excluded directories (``pg_wal``, ``pg_replslot``, …) are bare headers without contents
  (``bundle.go`` ``ExcludedFilenames``);
* a member not in the backup's file list is skipped (``tar_interpreter.go``
  ``unwrapRegularFileOld``): ``copy_N`` tars may carry stale members;
* a member of a delta backup marked ``IsIncremented`` is a ``wi1`` page increment applied to
  the file restored from the parent (``pagefile.go`` ``ApplyFileIncrement``);
* after the tar's end only zero bytes may follow (``internal/extract.go`` ``readTrailingZeros``);
  reading to the end of the stream also makes the codec check its frame checksum.
"""

from __future__ import annotations

import logging
import os
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import CorruptBackup

log = logging.getLogger(__name__)

__all__ = ["LevelFilter", "extract_walg_tar", "apply_increment", "member_key", "INCREMENT_MAGIC"]

INCREMENT_MAGIC = b"wi1\x55"
_CHUNK = 1 << 20


def member_key(name: str) -> str:
    """The comparable form of a member or ``Files`` name: no leading ``/`` or ``./``."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


@dataclass
class LevelFilter:
    """Which members one backup level contributes, and which of them are increments."""

    wanted: set[str] | None  # member_key()s; None = everything
    incremented: set[str]
    skip: set[str]  # member_key()s never written (tablespace_map when links are rebuilt)


def _rel(name: str, label: str) -> PurePosixPath:
    key = member_key(name)
    path = PurePosixPath(key) if key else PurePosixPath(".")
    if ".." in path.parts or path.is_absolute():
        raise CorruptBackup(f"{label}: member {name!r} points outside the restore directory",
                            checked="every tar member's path", fix="this archive is not a PostgreSQL backup")
    return path


def extract_walg_tar(stream: BinaryIO, pgdata: Path, *, label: str, level: LevelFilter,
                     owner: tuple[int, int] | None, block_size: int,
                     on_member: Callable[[str], None] | None = None) -> int:
    """Extract ``stream`` (decoded) into ``pgdata``; returns bytes written.

    Members are read with large reads and written by a second thread (:mod:`..tarstream`); a
    tar without its end-of-archive marker is refused as truncated.
    """
    from ._tarstream import Guard, TarStream, TruncatedTar, Writer

    guard = Guard(label, pgdata)  # names, places and sizes (the object's and the restore's caps)
    total = 0
    tar = TarStream(stream)
    try:
        with Writer() as writer:
            for member in tar.members():
                total += _member(tar, member, pgdata, label, level, owner, block_size, writer, guard)
                if on_member:
                    on_member(member.name)
    except OSError as exc:
        named = guard.os_error(exc) if exc.errno is not None else None
        if named is None:
            raise
        raise named from exc
    except TruncatedTar as exc:
        raise CorruptBackup(f"{label}: the tar archive {exc}",
                            checked="reading the tar stream member by member (a zero block ends a complete tar)",
                            fix="the object is truncated or corrupt; restore from another backup") from exc
    except tarfile.TarError as exc:
        raise CorruptBackup(f"{label}: not a valid tar archive ({exc})",
                            checked="reading the tar stream member by member",
                            fix="the object is truncated or corrupt; restore from another backup") from exc
    _trailing_zeros(stream, label)
    return total


class _MemberData:
    """The current member's bytes as a file: ``read(n)`` returns ``n`` bytes unless it ends."""

    def __init__(self, tar) -> None:
        self.tar = tar

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = 1 << 62
        parts, got = [], 0
        while got < n and (data := self.tar.read_data(min(n - got, _CHUNK))):
            parts.append(data)
            got += len(data)
        return b"".join(parts)


def _trailing_zeros(stream: BinaryIO, label: str) -> None:
    try:
        while chunk := stream.read(_CHUNK):
            if chunk.count(0) != len(chunk):
                raise CorruptBackup(f"{label}: data follows the end of the tar archive",
                                    checked="the bytes after the tar's end-of-archive marker (only zeros allowed)",
                                    fix="the object is corrupt or not a WAL-G tar; restore from another backup")
    except (EOFError, ValueError, RuntimeError) as exc:
        raise CorruptBackup(f"{label}: the compressed stream is damaged ({exc})",
                            checked="decompressing the object to its end (frame checksums)",
                            fix="the object is corrupt; restore from another backup") from exc
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise CorruptBackup(f"{label}: the compressed stream is damaged ({exc})",
                            checked="decompressing the object to its end (frame checksums)",
                            fix="the object is corrupt; restore from another backup") from exc


def _member(tar, member, pgdata: Path, label, level: LevelFilter, owner, block_size, writer, guard) -> int:
    rel = _rel(member.name, label)
    key = str(rel) if str(rel) != "." else ""
    if member.isdir():
        guard.place(member.name, rel, "dir")
        target = pgdata / rel
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        if owner:
            os.chown(target, *owner)
        return 0
    if level.wanted is not None and key not in level.wanted:
        return 0  # not part of this backup (a stale copy_N member, or not needed from this level)
    if key in level.skip:
        return 0
    if member.issym() or member.islnk():
        # WAL-G never stores tablespace links (they are rebuilt from the sentinel's Spec) and
        # writes other symlinks lossily (Linkname = its own base name): nothing worth restoring.
        log.warning("%s: skipping link member %s -> %s", label, member.name, member.linkname)
        return 0
    if not member.isreg():
        raise CorruptBackup(f"{label}: member {member.name!r} has refused type {member.type!r}",
                            checked="every tar member's type (only files, directories, links)",
                            fix="this archive is not a PostgreSQL backup")
    guard.place(member.name, rel, "file")
    guard.admit(member.name, member.size)  # an increment's size bounds the pages it writes
    target = pgdata / rel
    name = f"{label}:{member.name}"
    if key in level.incremented:
        return apply_increment(_MemberData(tar), target, label=name, block_size=block_size)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    from ._tarstream import write_member

    def short(written: int) -> CorruptBackup:
        return CorruptBackup(f"{label}: member {member.name!r} is short ({written} of {member.size} bytes)",
                             checked="member sizes", fix="the object is truncated; restore from another backup")

    return write_member(tar, target, member.size, owner, writer, short=short)


def _read_exact(src: BinaryIO | _MemberData, n: int, label: str, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise CorruptBackup(f"{label}: the increment ends inside its {what}",
                            checked="the wi1 increment layout (header, block list, pages)",
                            fix="the object is truncated or corrupt; restore from another backup")
    return data


def apply_increment(src: BinaryIO | _MemberData, target: Path, *, label: str, block_size: int) -> int:
    """Apply a ``wi1`` increment to ``target`` (restored from the parent); returns bytes written.

    Layout (little-endian): ``wi1\\x55``, uint64 file size, uint32 N, N × uint32 block numbers,
    N × block_size page images.  The file is truncated to the size, then each page written.
    """
    if _read_exact(src, 4, label, "header") != INCREMENT_MAGIC:
        raise CorruptBackup(f"{label}: not a WAL-G page increment (no wi1 header)",
                            checked="the first 4 bytes of an IsIncremented member",
                            fix="files_metadata.json and the tar disagree; restore from another backup")
    (size,) = struct.unpack("<Q", _read_exact(src, 8, label, "file size"))
    (count,) = struct.unpack("<I", _read_exact(src, 4, label, "block count"))
    blocks = struct.unpack(f"<{count}I", _read_exact(src, 4 * count, label, "block list"))
    try:
        fd = os.open(target, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise CorruptBackup(f"{label}: the increment's base file is missing from the parent backup",
                            checked="the delta chain restored so far",
                            fix="the parent backup lacks this file; the chain is inconsistent") from exc
    written = 0
    with os.fdopen(fd, "r+b") as out:
        out.truncate(size)
        for blockno in blocks:
            page = _read_exact(src, block_size, label, "pages")
            out.seek(blockno * block_size)
            out.write(page)
            written += block_size
    if src.read(1):
        raise CorruptBackup(f"{label}: bytes follow the increment's last page",
                            checked="the wi1 increment layout", fix="the object is corrupt")
    return written
