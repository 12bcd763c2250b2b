"""Streaming decompression and safe tar extraction.

Codecs are chosen by the object's magic bytes first and its extension second: the extension
only says how the writer *meant* to compress, the bytes say what it did.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import CorruptBackup

__all__ = ["COMPRESSION_SUFFIXES", "strip_suffix", "detect_codec", "open_decompressed", "open_codec",
           "extract_tar"]

COMPRESSION_SUFFIXES = {".gz": "gzip", ".lz4": "lz4", ".zst": "zstd", ".br": "brotli", ".lzma": "lzma",
                        ".xz": "xz", ".bz2": "bzip2"}
_MAGIC = [
    (b"\x1f\x8b", "gzip"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
]
_CHUNK = 1 << 20


def strip_suffix(name: str) -> tuple[str, str | None]:
    """``000000010000000000000003.zst`` → (``000000010000000000000003``, ``zstd``)."""
    for suffix, codec in COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], codec
    return name, None


def detect_codec(head: bytes, name: str = "") -> str | None:
    for magic, codec in _MAGIC:
        if head.startswith(magic):
            return codec
    _, by_ext = strip_suffix(name)
    if by_ext in ("brotli", "lzma"):  # no reliable magic: trust the extension
        return by_ext
    return None


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_decompressed(raw: BinaryIO, name: str = "") -> BinaryIO:
    """Wrap ``raw`` in the decompressor its magic bytes (or extension) call for."""
    head = raw.read(8)
    codec = detect_codec(head, name)
    return open_codec(_Prefixed(head, raw), codec, name)


def open_codec(raw: BinaryIO, codec: str | None, name: str = "") -> BinaryIO:
    """Wrap ``raw`` in the decompressor for ``codec`` (``None``: no compression), chosen by the caller."""
    stream = io.BufferedReader(raw if isinstance(raw, io.RawIOBase) else _Prefixed(b"", raw),
                               buffer_size=_CHUNK)
    if codec is None:
        return stream
    if codec == "brotli":
        return io.BufferedReader(_BrotliReader(stream), buffer_size=_CHUNK)
    if codec == "lzma":  # LZMA-alone, as WAL-G writes it: size in the header or unknown (end marker)
        import lzma

        return lzma.LZMAFile(stream, mode="rb", format=lzma.FORMAT_ALONE)
    if codec == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")
    if codec == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameFile(stream, mode="rb")
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_CHUNK)
    if codec in ("xz", "lzma"):
        import lzma

        return lzma.LZMAFile(stream, mode="rb")
    if codec == "bzip2":
        import bz2

        return bz2.BZ2File(stream, mode="rb")
    raise CorruptBackup(f"{name}: compression {codec!r} is not supported yet",
                        checked="magic bytes and file extension",
                        fix="re-run with an uncompressed, gzip, lz4 or zstd backup")


class _BrotliReader(io.RawIOBase):
    """Streaming brotli decoder (the ``brotli`` package has no file object)."""

    def __init__(self, raw: BinaryIO) -> None:
        import brotli

        self._raw = raw
        self._dec = brotli.Decompressor()
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        import brotli

        while not self._buf and not self._eof:
            pending = hasattr(self._dec, "can_accept_more_data") and not self._dec.can_accept_more_data()
            chunk = b"" if pending else self._raw.read(1 << 16)
            try:
                # bounded output: a WAL segment of zeros is a few bytes compressed
                self._buf = self._process(chunk)
            except brotli.error as exc:
                raise ValueError(f"brotli: {exc}") from exc
            if not chunk and not pending and not self._buf:
                self._eof = True
                if not self._dec.is_finished():
                    raise EOFError("brotli stream ends before its last meta-block")
        n = min(len(buf), len(self._buf))
        buf[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _process(self, chunk: bytes) -> bytes:
        try:
            return self._dec.process(chunk, output_buffer_limit=_CHUNK)
        except TypeError:  # brotli < 1.2: no output limit
            return self._dec.process(chunk)

    def close(self) -> None:
        self._raw.close()
        super().close()


def copy_stream(src: BinaryIO, dst: BinaryIO, name: str) -> int:
    """Copy until EOF, turning codec failures into :class:`CorruptBackup` naming ``name``."""
    total = 0
    try:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            total += len(chunk)
    except (OSError, EOFError, ValueError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error (disk full, …) — not a property of the backup
        raise CorruptBackup(f"{name}: the compressed stream is damaged ({exc})",
                            checked="decompressing the object end to end",
                            fix="the object in the backup store is truncated or corrupt; restore from another backup") from exc
    return total


def _safe_relpath(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name.lstrip("./") if name.startswith("./") else name)
    if path.is_absolute() or ".." in path.parts:
        return None
    if str(path) in ("", "."):
        return PurePosixPath(".")
    return path


def extract_tar(
    stream: BinaryIO,
    dest: Path,
    *,
    label: str,
    on_symlink: Callable[[PurePosixPath, str], None] | None = None,
    owner: tuple[int, int] | None = None,
) -> int:
    """Extract a tar stream into ``dest`` without ever writing outside it.

    Only directories and regular files are written.  Symlinks are handed to ``on_symlink``
    (the format maps tablespace links); anything else (devices, hard links, absolute or
    ``..`` paths) is refused as a corrupt or hostile backup.  Returns bytes written.
    """
    total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                total += _extract_member(tar, member, dest, label, on_symlink, owner)
    except tarfile.TarError as exc:
        raise CorruptBackup(f"{label}: not a valid tar archive ({exc})",
                            checked="reading the tar stream member by member",
                            fix="the object is truncated or corrupt; restore from another backup") from exc
    return total


def _extract_member(tar, member, dest, label, on_symlink, owner) -> int:
    rel = _safe_relpath(member.name)
    if rel is None:
        raise CorruptBackup(f"{label}: member {member.name!r} points outside the restore directory",
                            checked="every tar member's path", fix="this archive is not a PostgreSQL backup")
    target = dest / rel
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        if owner:
            os.chown(target, *owner)
        return 0
    if member.issym():
        if on_symlink is None:
            raise CorruptBackup(f"{label}: unexpected symlink {member.name!r} -> {member.linkname!r}",
                                checked="every tar member's type", fix="this archive is not a PostgreSQL backup")
        on_symlink(rel, member.linkname)
        return 0
    if not member.isreg():
        raise CorruptBackup(f"{label}: member {member.name!r} has refused type {member.type!r}",
                            checked="every tar member's type (only files, directories, symlinks)",
                            fix="this archive is not a PostgreSQL backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as out:
        written = copy_stream(src, out, f"{label}:{member.name}")
        if owner:
            os.fchown(out.fileno(), *owner)
    if written != member.size:
        raise CorruptBackup(f"{label}: member {member.name!r} is short ({written} of {member.size} bytes)",
                            checked="member sizes", fix="the object is truncated; restore from another backup")
    return written
