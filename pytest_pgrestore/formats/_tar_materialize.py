"""The materialize step every tar format shares: fetch each tar object, decode it, extract it.

pg_basebackup, barman-cloud and WAL-G lay a backup out as tar objects.  They differ in where each
tar goes, how an object is decoded (WAL-G may encrypt) and how its members are written (WAL-G's
increments patch pages); what they share lives here: the objects fetched ``workers`` at a time,
every byte read from the store counted, a failure or Ctrl-C stopping the other downloads at their
next read (and every thread joined before this returns), and the tablespace links.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..store._base import ObjectStore
from ._codecs import extract_tar, open_decompressed
from ._parallel import Counting, run_jobs

__all__ = ["TarObject", "extract_tars", "link_tablespaces"]


@dataclass(frozen=True)
class TarObject:
    key: str  # the object in the store
    dest: Path  # the directory its members go into


#: decode one object: (the counted raw stream, its key) -> the tar stream
Decode = Callable[[Counting, str], BinaryIO]
#: extract one decoded tar: (the stream, the object) -> bytes written
Extract = Callable[[BinaryIO, TarObject], int]


def extract_tars(store: ObjectStore, objects: Sequence[TarObject], *, workers: int, name: str,
                 owner: tuple[int, int] | None = None,
                 on_symlink: Callable[[PurePosixPath, str], None] | None = None,
                 decode: Decode | None = None, extract: Extract | None = None) -> tuple[int, int]:
    """Fetch, decode and extract ``objects`` (in their order, ``workers`` at a time); returns
    (bytes fetched, bytes written).  By default an object is decoded by its file name's
    compression suffix and extracted by :func:`~.codecs.extract_tar` (``on_symlink`` judges each
    symlink member, ``owner`` gets every file)."""
    cancel = threading.Event()

    def default_decode(raw: Counting, key: str) -> BinaryIO:
        return open_decompressed(raw, key)

    def default_extract(stream: BinaryIO, obj: TarObject) -> int:
        return extract_tar(stream, obj.dest, label=obj.key, on_symlink=on_symlink, owner=owner)

    decode_one, extract_one = decode or default_decode, extract or default_extract

    def job(obj: TarObject) -> tuple[int, int]:
        obj.dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        counted = Counting(store.open(obj.key), cancel)
        with counted.raw, decode_one(counted, obj.key) as stream:
            written = extract_one(stream, obj)
        return counted.count, written

    results = run_jobs(job, objects, workers=workers, name=name, cancel=cancel)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def link_tablespaces(pgdata: Path, links: dict[str, Path]) -> None:
    """``pg_tblspc/<oid>`` -> the run dir's folder for that tablespace (made if no tar made it)."""
    for oid, path in links.items():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        link = pgdata / "pg_tblspc" / oid
        link.parent.mkdir(mode=0o700, exist_ok=True)
        if not link.is_symlink():
            os.symlink(path, link)
