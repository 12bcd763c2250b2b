"""A tar stream read member by member with large reads, and file data written by a second thread.

``tarfile``'s stream mode (``r|``) reads its input 10 KiB at a time and re-joins and re-slices
its buffer on every read; on a 1 GB base backup that costs more than decompressing it.  Here
headers are still parsed by ``tarfile.TarInfo.fromtarfile`` (ustar, GNU long names, PAX), but
member data is read straight off the decoded stream in 1 MiB chunks.

File data is handed to a :class:`Writer` thread: decompression (this thread) and the kernel's
copy into the page cache (``os.write``, which releases the GIL) overlap on two cores.  At most
``max_chunks`` chunks wait, so memory stays bounded.

What an archive may make is judged by a :class:`Guard` before anything is written: every member's
name (no component longer than a file name may be), its place (no file where an earlier member
made a directory, nothing under a file) and its size (its header's size taken from the
bytes this object and this restore may still write: a decompression bomb stops at its header).
"""

from __future__ import annotations

import contextvars
import os
import queue
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .._fmt import human_bytes
from ..errors import CorruptBackup

__all__ = ["TarStream", "Writer", "TruncatedTar", "CHUNK", "write_member", "Budget", "PathClaims", "Guard",
           "Extraction", "CURRENT", "NAME_MAX", "PATH_MAX"]

CHUNK = 1 << 20
_ZERO = bytes(tarfile.BLOCKSIZE)


class TruncatedTar(Exception):
    """The stream ended before the tar's end-of-archive marker."""


class TarStream:
    """Members of the tar archive on ``raw`` (a decoded stream), in order.

    Iterate :meth:`members`; while a regular member is current, :meth:`read_data` hands out its
    bytes.  Whatever a caller does not read is skipped when the next member is asked for.
    ``ended`` is True once the end-of-archive marker (a zero block) was read.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.fileobj = self  # what TarInfo.fromtarfile reads from
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
        self.pax_headers: dict[str, str] = {}
        self.offset = 0  # set by TarInfo._proc_builtin; unused
        self.ended = False
        self._pos = 0
        self._pushback = b""
        self._remaining = 0  # data bytes of the current member not yet read
        self._pad = 0

    # -- what TarInfo.fromtarfile needs -------------------------------------------------------
    def read(self, n: int) -> bytes:
        if self._pushback:
            data, self._pushback = self._pushback[:n], self._pushback[n:]
            if len(data) < n:
                data += self._exact(n - len(data))
        else:
            data = self._exact(n)
        self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def _exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self.raw.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    # -- members --------------------------------------------------------------------------------
    def members(self) -> Iterator[tarfile.TarInfo]:
        """Each member's header; raises TruncatedTar or tarfile.HeaderError on a bad archive."""
        while True:
            self._skip(self._remaining + self._pad)
            self._remaining = self._pad = 0
            at = self._pos
            block = self._exact(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                raise TruncatedTar(f"ends before its end-of-archive marker (at offset {at + len(block)})")
            if block == _ZERO:
                self._pos += tarfile.BLOCKSIZE
                self.ended = True
                return
            self._pushback = block
            try:
                # fromtarfile reads a TarFile's fileobj, encoding and errors, which this stream has
                info = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
            except tarfile.HeaderError as exc:
                raise tarfile.HeaderError(f"unreadable member header at offset {at} ({exc})") from exc
            if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES:
                self._remaining = info.size
                self._pad = -info.size % tarfile.BLOCKSIZE
            yield info

    def read_data(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes of the current member's data; b"" at its end.  TruncatedTar when
        the stream ends inside it."""
        if self._remaining <= 0:
            return b""
        data = self.raw.read(min(n, self._remaining))
        if not data:
            raise TruncatedTar(f"ends inside a member ({self._remaining} bytes of it missing)")
        self._remaining -= len(data)
        self._pos += len(data)
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            data = self.raw.read(min(n, CHUNK))
            if not data:
                raise TruncatedTar(f"ends inside a member ({n} bytes of it missing)")
            n -= len(data)
            self._pos += len(data)


class Writer:
    """Writes files on a thread of its own, in order: ``write`` chunks, then ``close`` per file;
    or ``write_file`` for a small file, created there too.

    An error on the writer thread (disk full) is raised to the caller at its next call.  Use as
    a context manager: leaving waits for every write; when the block failed, the writes still
    queued are dropped but every file descriptor is closed.
    """

    def __init__(self, *, max_chunks: int = 16) -> None:
        self._q: queue.Queue = queue.Queue(max_chunks)
        self._error: BaseException | None = None
        self._abort = False
        self._thread = threading.Thread(target=self._run, name="tar-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self._abort = exc_type is not None
        self._q.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise()

    def write(self, fd: int, data, *, also=None) -> None:
        """Queue ``data`` for ``fd``; ``also(data)`` (a digest's update) runs on the writer thread too."""
        self._raise()
        self._q.put((fd, data) if also is None else (fd, data, also))

    def write_file(self, path, chunks: list, owner: tuple[int, int] | None) -> None:
        """Create ``path`` and write ``chunks`` into it, all on the writer thread: a file's
        creation costs the kernel more than its few KB (ext4 inode allocation), and here it runs
        beside the decompression instead of between two of its steps."""
        self._raise()
        self._q.put((_NEW_FILE, path, chunks, owner or ()))

    def close(self, fd: int, owner: tuple[int, int] | None) -> None:
        """Close ``fd`` after its queued data (always queued: no descriptor leaks on an error)."""
        self._q.put((fd, owner or ()))
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            fd, what = item[0], item[1]
            failed = self._abort or self._error is not None
            try:
                if fd is _NEW_FILE:
                    if not failed:
                        _create(what, item[2], item[3])
                elif isinstance(what, tuple):  # close, after giving the file to its owner
                    try:
                        if what and not failed:
                            os.fchown(fd, *what)
                    finally:
                        os.close(fd)
                elif not failed:
                    if len(item) > 2:
                        item[2](what)
                    write_all(fd, what)
            except BaseException as exc:  # kept for the caller; later writes are dropped
                if self._error is None:
                    self._error = exc


_NEW_FILE = object()


def write_member(tar: TarStream, target, size: int, owner: tuple[int, int] | None, writer: Writer, *,
                 short: Callable[[int], Exception] | None = None) -> int:
    """The current member's data into a new file ``target`` (``O_NOFOLLOW``), through ``writer``.

    A small member is read here and created and written on the writer thread; a large one is
    streamed to it chunk by chunk.  ``short(written)``, when given, is the error raised for a
    member whose data ends before ``size`` (a small one before its file is created)."""
    if size <= CHUNK:  # most files
        chunks = list(iter(lambda: tar.read_data(CHUNK), b""))
        written = sum(len(c) for c in chunks)
        if short is not None and written != size:
            raise short(written)
        writer.write_file(target, chunks, owner)
        return written
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    written = 0
    try:
        while chunk := tar.read_data(CHUNK):
            writer.write(fd, chunk)
            written += len(chunk)
    finally:
        writer.close(fd, owner)  # closed on the writer thread once its data is written
    if short is not None and written != size:
        raise short(written)
    return written


def _create(path, chunks: list, owner: tuple[int, int] | tuple[()]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        for chunk in chunks:
            write_all(fd, chunk)
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- what an archive may make ------------------------------------------------------------------
NAME_MAX = 255  # bytes in one path component (every Linux filesystem PostgreSQL runs on)
PATH_MAX = 4095  # bytes in a whole path, the terminating NUL aside
_HOSTILE = "this archive is not a PostgreSQL backup (or it is damaged); restore from another backup"


class Budget:
    """Bytes that extraction may still write, shared by every thread of one restore: the disk
    pre-flight's reservation (``what`` says where the figure comes from).  One check per member."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Count ``n`` more bytes; False (and nothing counted) if that passes the limit."""
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True


class PathClaims:
    """What each path an extraction made is (file, dir, link), shared by the objects extracted
    together: a later member may not make it something else, nor put anything under a file (a
    link's name is still a plain path in dest: links are never written here).  Tar allows a
    member to be stored again (an appended update): the same kind is fine."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {}
        self._lock = threading.Lock()

    def claim(self, dest: str, rel: str, kind: str) -> str | None:
        """Record ``rel`` (a relative path, "/"-separated) under ``dest`` as ``kind``; the reason it
        may not be, or None.  A few dict operations a member: no Path objects."""
        kinds = self._kinds
        with self._lock:
            at = rel.find("/")
            while at > 0:  # the ancestors, top down
                parent = rel[:at]
                pkey = dest + parent
                had = kinds.get(pkey)
                if had is None:
                    kinds[pkey] = "dir"
                elif had == "file":  # under a link is a plain path in dest (links are never written
                    # here); the harness's tablespace link then refuses the directory it finds
                    return f"lies under {parent!r}, which an earlier member made a {_NOUN[had]}"
                at = rel.find("/", at + 1)
            key = dest + rel
            had = kinds.get(key)
            if had is not None and had != kind:
                return f"is a {_NOUN[kind]}, but an earlier member made {rel!r} a {_NOUN[had]}"
            kinds[key] = kind
        return None


_NOUN = {"file": "regular file", "dir": "directory", "link": "symbolic link"}


@dataclass
class Extraction:
    """What the objects extracted together share (set in :data:`CURRENT` by ``extract_tars``)."""

    budget: Budget | None = None
    paths: PathClaims | None = None
    max_bytes: int | None = None  # what this object declares it expands to, when its format says


#: the extraction the current thread works for; None: an extraction on its own (no shared caps)
CURRENT: contextvars.ContextVar[Extraction | None] = contextvars.ContextVar("pgrestore_extraction",
                                                                           default=None)


class Guard:
    """Judges the members of one tar object (``label``) extracted into ``dest``."""

    def __init__(self, label: str, dest: Path, state: Extraction | None = None) -> None:
        state = state if state is not None else CURRENT.get()
        self.label, self.dest = label, dest
        self.budget = state.budget if state else None
        self.paths = state.paths if state and state.paths is not None else PathClaims()
        self.max_bytes = state.max_bytes if state else None
        self.written = 0  # header sizes of the files this object wrote
        self._prefix = str(dest) + "/"  # the claims' keys: this prefix and the member's path

    def _refuse(self, name: str, what: str, checked: str, fix: str = _HOSTILE) -> CorruptBackup:
        return CorruptBackup(f"{self.label}: member {name!r} {what}", checked=checked, fix=fix)

    def place(self, name: str, rel: PurePosixPath, kind: str) -> None:
        """Check ``rel`` (the member ``name``) may be made as ``kind`` ("file", "dir", "link")."""
        path = str(rel)
        if len(path) > NAME_MAX // 4:  # shorter, no component can pass NAME_MAX bytes (4 a character)
            raw = os.fsencode(path)
            longest = max(len(part) for part in raw.split(b"/"))
            if len(raw) > PATH_MAX or longest > NAME_MAX:
                what = (f"has a path of {len(raw)} bytes, longer than the {PATH_MAX} a path may have"
                        if len(raw) > PATH_MAX else
                        f"has a name of {longest} bytes, longer than the {NAME_MAX} a file name may have")
                raise self._refuse(_short(name), what, "the length of every tar member's name")
        why = self.paths.claim(self._prefix, path, kind)
        if why is not None:
            raise self._refuse(name, why, "where every tar member goes (a path is one file, directory or link)")

    def admit(self, name: str, size: int) -> None:
        """Count a file member's ``size`` (its header's) before a byte of it is written."""
        if self.max_bytes is not None and self.written + size > self.max_bytes:
            raise self._refuse(
                name, f"declares {human_bytes(size)} ({size} bytes), more than the object declares it holds "
                      f"({human_bytes(self.max_bytes)}, {human_bytes(self.written)} of it already written)",
                "each tar member's size against the object's declared size",
                "the object expands to more than the backup declares (a damaged or hostile object); "
                "restore from another backup")
        if self.budget is not None and not self.budget.take(size):
            budget = self.budget
            raise self._refuse(
                name, f"declares {human_bytes(size)} ({size} bytes): extracting it would pass the "
                      f"{human_bytes(budget.limit)} the disk pre-flight reserved for the backup's files "
                      f"({human_bytes(budget.used)} already written)",
                f"bytes written by extraction against the disk pre-flight's reservation ({budget.what})",
                "the backup expands to more than it declares (a damaged or hostile object, a decompression "
                "bomb); restore from another backup")
        self.written += size

    def os_error(self, exc: OSError) -> CorruptBackup | None:
        """A write refused by the filesystem because of what the archive holds, as a named
        failure; None for anything else (a full disk, a permission: the machine's, not the backup's)."""
        import errno

        if exc.errno not in (errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        where = str(exc.filename) if exc.filename is not None else "?"
        try:
            where = str(Path(where).relative_to(self.dest))
        except ValueError:
            pass
        return CorruptBackup(f"{self.label}: cannot write {_short(where)!r} from the archive ({exc.strerror})",
                             checked="writing every tar member (a path is one file, directory or link)",
                             fix=_HOSTILE)


def _short(name: str, keep: int = 80) -> str:
    return name if len(name) <= keep else f"{name[:keep]}… ({len(name)} characters)"
