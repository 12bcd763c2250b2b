"""The materialize step every tar format shares: fetch each tar object, decode it, extract it.

pg_basebackup, barman-cloud and WAL-G lay a backup out as tar objects.  They differ in where each
tar goes, how an object is decoded (WAL-G may encrypt) and how its members are written (WAL-G's
increments patch pages); what they share lives here: the objects fetched ``workers`` at a time,
every byte read from the store counted, a failure or Ctrl-C stopping the other downloads at their
next read (and every thread joined before this returns), and the tablespace links.

Extraction is bounded: every file member's size is taken, before it is written, from what its
object declares it holds (``TarObject.max_bytes``, when the format knows it) and from the disk
pre-flight's reservation for the whole restore (:func:`reserve`, called by
``restore._diskcheck``), shared by every object and every thread.  A backup that expands to more
than it declares (a decompression bomb) fails naming the object and the member, never with a
full disk.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import CorruptBackup
from ..store._base import ObjectStore
from ._codecs import extract_tar, open_decompressed
from ._parallel import Counting, run_jobs
from ._tarstream import CURRENT, Budget, Extraction, PathClaims

__all__ = ["TarObject", "extract_tars", "link_tablespaces", "Reservation", "reserve", "reserved"]


@dataclass(frozen=True)
class TarObject:
    key: str  # the object in the store
    dest: Path  # the directory its members go into
    max_bytes: int | None = None  # what the object expands to at most, when its format declares it


class Reservation:
    """The disk pre-flight's reservation: extraction under ``roots`` writes at most ``limit``
    bytes.  It holds only the backup it was made for (``keys``, its objects; None: any) and each
    extraction root (one restore's run dir, or its PGDATA) counts from zero: a retried restore
    starts a new run dir, and a fallback backup was not what the pre-flight measured."""

    def __init__(self, limit: int, what: str, roots: Sequence[Path], keys: Iterable[str] | None = None) -> None:
        self.limit, self.what = limit, what
        self.roots = [Path(os.path.abspath(r)) for r in roots]
        self.keys = set(keys) if keys is not None else None
        self._budgets: dict[str, Budget] = {}
        self._lock = threading.Lock()

    def budget_for(self, objects: Sequence[TarObject]) -> Budget | None:
        if not objects:
            return None
        if self.keys is not None and not all(o.key in self.keys for o in objects):
            return None  # another backup's objects
        paths = [Path(os.path.abspath(o.dest)) for o in objects]
        if not all(any(p == r or r in p.parents for r in self.roots) for p in paths):
            return None  # not this restore's extraction
        root = os.path.commonpath(paths)
        with self._lock:
            return self._budgets.setdefault(root, Budget(self.limit, self.what))


_RESERVED: contextvars.ContextVar[Reservation | None] = contextvars.ContextVar("pgrestore_reserved",
                                                                              default=None)


def reserve(limit: int | None, what: str = "", roots: Sequence[Path] = (),
            keys: Iterable[str] | None = None) -> Reservation | None:
    """Bound the extractions of ``keys`` (a backup's objects; None: any) this thread starts next
    under ``roots`` to ``limit`` bytes (None: unbounded, when no size was declared).  The disk
    pre-flight calls this once it passed."""
    res = Reservation(limit, what, roots, keys) if limit is not None else None
    _RESERVED.set(res)
    return res


def reserved() -> Reservation | None:
    """The reservation extractions started from this thread are held to."""
    return _RESERVED.get()


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
    reservation = _RESERVED.get()
    budget = reservation.budget_for(objects) if reservation is not None else None
    paths = PathClaims()  # the objects of one call share their paths (WAL-G's parts share PGDATA)

    def default_decode(raw: Counting, key: str) -> BinaryIO:
        return open_decompressed(raw, key)

    def default_extract(stream: BinaryIO, obj: TarObject) -> int:
        return extract_tar(stream, obj.dest, label=obj.key, on_symlink=on_symlink, owner=owner)

    decode_one, extract_one = decode or default_decode, extract or default_extract

    def job(obj: TarObject) -> tuple[int, int]:
        token = CURRENT.set(Extraction(budget, paths, obj.max_bytes))  # read by extract_tar / extract_walg_tar
        try:
            obj.dest.mkdir(mode=0o700, parents=True, exist_ok=True)
            counted = Counting(store.open(obj.key), cancel)
            with counted.raw, decode_one(counted, obj.key) as stream:
                written = extract_one(stream, obj)
            return counted.count, written
        finally:
            CURRENT.reset(token)

    results = run_jobs(job, objects, workers=workers, name=name, cancel=cancel)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def link_tablespaces(pgdata: Path, links: dict[str, Path]) -> None:
    """``pg_tblspc/<oid>`` -> the run dir's folder for that tablespace (made if no tar made it)."""
    for oid, path in links.items():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        link = pgdata / "pg_tblspc" / oid
        if link.parent.is_symlink() or (link.parent.exists() and not link.parent.is_dir()):
            raise _not_a_link_place(link.parent, "pg_tblspc", oid)
        link.parent.mkdir(mode=0o700, exist_ok=True)
        if link.is_symlink():
            continue
        if link.exists():  # the archive made a directory (or a file) where the harness links
            raise _not_a_link_place(link, f"pg_tblspc/{oid}", oid)
        os.symlink(path, link)


def _not_a_link_place(path: Path, rel: str, oid: str) -> CorruptBackup:
    kind = "directory" if path.is_dir() else "file"
    return CorruptBackup(f"the backup's archive made {rel} a {kind}, where the link to tablespace {oid} goes",
                         checked=f"{path} before linking tablespace {oid} to the run dir",
                         fix="this archive is not a PostgreSQL backup (or it is damaged); restore from another backup")
