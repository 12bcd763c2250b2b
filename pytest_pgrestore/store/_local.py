"""A backup store in a local directory (``file://`` sources).

Keys are paths relative to the root, joined with ``/``.  Symlinked files and directories are
followed (plain base backups may symlink ``pg_wal``); a directory reached twice is walked once.
"""

from __future__ import annotations

import errno
import io
import os
import stat as stat_mod
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from ..errors import AccessDenied, SourceError, SourceNotFound
from ._base import ObjectInfo, ObjectStore

__all__ = ["LocalStore"]


class LocalStore(ObjectStore):
    """Read-only view of the files under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(root))
        self.description = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def parent(self, levels: int) -> tuple[LocalStore, str]:
        return LocalStore(self.root.parents[levels - 1]), self.root.name

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file whose key starts with ``prefix``, recursively, in key order."""
        dir_part, _, name_part = prefix.rpartition("/")
        start = self._path(dir_part) if dir_part else self.root
        base = f"{dir_part}/" if dir_part else ""
        try:
            entries = _sorted_entries(start)
        except (FileNotFoundError, NotADirectoryError):
            self._check_root()
            return  # no directory under the prefix: nothing to list
        except OSError as exc:
            raise self._error(exc, start) from exc
        seen = {_dir_id(start)}
        for entry in entries:
            if entry.name.startswith(name_part):
                yield from self._walk_entry(entry, base + entry.name, seen)

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            self._check_root()
            return None
        except OSError as exc:
            raise self._error(exc, path) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return _info(key, st)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except OSError as exc:
            raise self._error(exc, path) from exc

    def open_range(self, key: str, start: int, end: int | None = None, etag: str | None = None) -> BinaryIO:
        """Bytes ``start`` up to ``end`` (exclusive, like a slice; ``None`` = to the end).

        Local files carry no ETag (``stat`` reports ``None``), so ``etag`` must be ``None``.
        """
        if etag is not None:
            raise ValueError("local files have no ETag; pass etag=None (as stat() reports)")
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad range start={start} end={end}")
        f = self.open(key)
        f.seek(start)
        if end is None:
            return f
        return io.BufferedReader(_Slice(f, end - start))

    def read_tail(self, key: str, nbytes: int) -> bytes:
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self.open(key) as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - nbytes))
            return f.read()

    # -- helpers -------------------------------------------------------------------------------

    def _walk_entry(
        self, entry: os.DirEntry[str], key: str, seen: set[tuple[int, int]]
    ) -> Iterator[ObjectInfo]:
        try:
            is_dir = entry.is_dir()
            if not is_dir:
                if entry.is_file():
                    yield _info(key, entry.stat())
                return  # sockets, fifos and dangling symlinks are not backup files
            path = Path(entry.path)
            ident = _dir_id(path)
            if ident in seen:
                return
            seen.add(ident)
            children = _sorted_entries(path)
        except FileNotFoundError:
            return  # removed while we walked
        except OSError as exc:
            raise self._error(exc, Path(entry.path)) from exc
        for child in children:
            yield from self._walk_entry(child, f"{key}/{child.name}", seen)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if key.startswith("/") or ".." in parts:
            raise ValueError(f"key {key!r} must be relative to the store root and stay inside it")
        return self.root.joinpath(*[p for p in parts if p])

    def _check_root(self) -> None:
        try:
            st = self.root.stat()
        except FileNotFoundError:
            raise SourceNotFound(
                f"backup directory {self.root} does not exist",
                checked=f"source {self.description}",
                fix="check the path (a relative file:// path is resolved from the current directory) "
                "and that the backup was copied there",
            ) from None
        except OSError as exc:
            raise self._error(exc, self.root) from exc
        if not stat_mod.S_ISDIR(st.st_mode):
            raise SourceNotFound(
                f"backup source {self.root} is not a directory",
                checked=f"source {self.description}",
                fix="point the source at the directory that holds the backup",
            )

    def _error(self, exc: OSError, path: Path) -> SourceError:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return AccessDenied(
                f"permission denied reading {path}",
                checked=f"as uid {os.geteuid()}, under {self.description}",
                fix="make the backup files readable (and directories searchable) by this user",
            )
        if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            self._check_root()
            return SourceNotFound(
                f"{path} is not a file in the backup",
                checked=f"under {self.description}",
                fix="list the source to see which files the backup holds",
            )
        return SourceError(f"cannot read {path}: {exc.strerror or exc}", checked=f"under {self.description}")


class _Slice(io.RawIOBase):
    """At most ``length`` bytes from ``f``'s current position."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: self._left]
        n = self._f.readinto(view) or 0  # type: ignore[attr-defined]  # BinaryIO declares no readinto; files have it
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _sorted_entries(path: Path) -> list[os.DirEntry[str]]:
    # A directory sorts as "name/" so that the walk yields keys in plain string order
    # ("a-b" < "a/c" because "-" < "/").
    with os.scandir(path) as it:
        entries = list(it)
    return sorted(entries, key=lambda e: e.name + "/" if _is_dir(e) else e.name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _dir_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_dev, st.st_ino)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    mtime = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
    return ObjectInfo(key=key, size=st.st_size, last_modified=mtime, etag=None)
