"""Streaming decompression and safe tar extraction.

Codecs are chosen by the object's magic bytes first and its extension second: the extension
only says how the writer *meant* to compress, the bytes say what it did.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO, cast

from ..errors import CorruptBackup

if TYPE_CHECKING:
    from ..store._base import Readable

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

    def __init__(self, head: bytes, raw: Readable) -> None:
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


def open_decompressed(raw: Readable, name: str = "") -> BinaryIO:
    """Wrap ``raw`` in the decompressor its magic bytes (or extension) call for."""
    head = raw.read(8)
    codec = detect_codec(head, name)
    return open_codec(_Prefixed(head, raw), codec, name)


def open_codec(raw: Readable, codec: str | None, name: str = "") -> BinaryIO:
    """Wrap ``raw`` in the decompressor for ``codec`` (``None``: no compression), chosen by the caller."""
    # every decoder is a buffered file of bytes (BufferedReader, GzipFile, LZMAFile, BZ2File,
    # Lz4Reader), which typing's BinaryIO does not count io.BufferedIOBase as
    return cast(BinaryIO, _decoder(raw, codec, name))


def _decoder(raw: Readable, codec: str | None, name: str) -> io.BufferedIOBase:
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
        return Lz4Reader(stream)
    if codec == "zstd":
        return io.BufferedReader(_ZstdReader(stream), buffer_size=_CHUNK)
    if codec in ("xz", "lzma"):
        import lzma

        return lzma.LZMAFile(stream, mode="rb")
    if codec == "bzip2":
        import bz2

        return bz2.BZ2File(stream, mode="rb")
    raise CorruptBackup(f"{name}: compression {codec!r} is not supported yet",
                        checked="magic bytes and file extension",
                        fix="re-run with an uncompressed, gzip, lz4 or zstd backup")


class Lz4Reader(io.BufferedIOBase):
    """lz4 frames one after another, decoded in large steps: ``read(n)`` hands out what one step
    decoded as it is, instead of re-joining ~70 KB pieces into the size asked for (what
    ``LZ4FrameFile`` does, reading its input 8 KiB at a time) — a copy of every byte saved.
    A stream that stops inside a frame raises EOFError; frame checksums are checked by lz4."""

    _IN = 128 << 10  # compressed bytes a step
    _OUT = _CHUNK  # most decoded bytes a step

    def __init__(self, raw: BinaryIO) -> None:
        import lz4.frame

        self._raw, self._new = raw, lz4.frame.LZ4FrameDecompressor
        self._dec = self._new()
        self._block, self._pos = b"", 0
        self._started = self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        while self._pos >= len(self._block):
            if self._eof or not self._step():
                return b""
        if self._pos == 0 and n >= len(self._block):  # the whole step: no copy
            out, self._block = self._block, b""
            return out
        out = self._block[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    read1 = read

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _step(self) -> bool:
        """Decode the next step into ``_block``; False at the end of the last frame."""
        dec = self._dec
        if dec.eof:  # a frame ended: another may follow
            rest, self._dec = dec.unused_data, self._new()
            data = rest or self._raw.read(self._IN)
            if not data:
                self._eof = True
                return False
        elif dec.needs_input:
            data = self._raw.read(self._IN)
            if not data:
                if self._started:
                    raise EOFError("the lz4 stream ends inside a frame")
                self._eof = True  # an empty object
                return False
        else:
            data = b""
        self._started = True
        self._block, self._pos = self._dec.decompress(data, max_length=self._OUT), 0
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


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


class _ZstdScan:
    """Follows the frame and block headers of zstd input on its way to the decoder.

    zstandard's ``stream_reader`` ends quietly when its input stops inside a frame, so a
    truncated object would decompress "successfully" to a prefix of itself.  Only the headers
    are parsed; block contents are skipped, so this costs a few steps per 128 kB block.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._state, self._need, self._field = "magic", 4, b""
        self._skip = 0
        self._checksum = False

    @property
    def between_frames(self) -> bool:
        return self._state == "magic" and not self._field and not self._skip

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
            else:
                step = min(self._need - len(self._field), len(data) - pos)
                self._field += data[pos : pos + step]
                if len(self._field) == self._need:
                    value, self._field = int.from_bytes(self._field, "little"), b""
                    self._advance(value)
            pos += step
        return data

    def _advance(self, value: int) -> None:
        state = self._state
        if state == "magic":  # a bad magic is the decoder's to report
            skippable = value & 0xFFFFFFF0 == 0x184D2A50
            self._state, self._need = ("skippable", 4) if skippable else ("descriptor", 1)
        elif state == "skippable":
            self._state, self._need, self._skip = "magic", 4, value
        elif state == "descriptor":
            fcs, single, dict_id = value >> 6, value >> 5 & 1, value & 3
            self._checksum = bool(value & 4)
            rest = (not single) + (0, 1, 2, 4)[dict_id] + (int(single), 2, 4, 8)[fcs]
            self._state, self._need = ("header", rest) if rest else ("block", 3)
        elif state == "header":
            self._state, self._need = "block", 3
        elif state == "block":
            last, kind, size = value & 1, value >> 1 & 3, value >> 3
            self._skip = 1 if kind == 1 else size  # an RLE block stores one byte
            if not last:
                self._state, self._need = "block", 3
            else:
                self._state, self._need = ("checksum", 4) if self._checksum else ("magic", 4)
        else:  # the content checksum closes the frame
            self._state, self._need = "magic", 4

    def close(self) -> None:
        self._raw.close()


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another; an input that stops inside a frame raises EOFError."""

    def __init__(self, raw: BinaryIO) -> None:
        import zstandard

        self._scan = _ZstdScan(raw)
        # zstandard's stubs want a file; it reads any object with read()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self._scan, read_size=_CHUNK, read_across_frames=True)  # type: ignore[arg-type]

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._reader.readinto(buf)
        if n == 0 and len(buf) and not self._scan.between_frames:
            raise EOFError("the zstd stream ends inside a frame")
        return n

    def close(self) -> None:
        self._reader.close()
        super().close()


def _codec_errors() -> tuple[type[BaseException], ...]:
    """What decompressors raise on damaged input; zlib, lzma and zstandard have their own classes."""
    import lzma
    import zlib

    errors: list[type[BaseException]] = [OSError, EOFError, ValueError, RuntimeError, zlib.error, lzma.LZMAError]
    if "zstandard" in sys.modules:  # not imported: nothing can have raised its error
        errors.append(sys.modules["zstandard"].ZstdError)
    return tuple(errors)


def _damaged(name: str, exc: BaseException) -> CorruptBackup:
    return CorruptBackup(f"{name}: the compressed stream is damaged ({exc})",
                         checked="decompressing the object end to end",
                         fix="the object in the backup store is truncated or corrupt; restore from another backup")


def copy_stream(src: BinaryIO, dst: BinaryIO, name: str) -> int:
    """Copy until EOF, turning codec failures into :class:`CorruptBackup` naming ``name``."""
    total = 0
    try:
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
            total += len(chunk)
    except _codec_errors() as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real I/O error (disk full, …) — not a property of the backup
        raise _damaged(name, exc) from exc
    return total


def _safe_relpath(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)  # drops "." parts: "./base/1" is "base/1", "" and "./" are "."
    if path.is_absolute() or ".." in path.parts:
        return None
    return path


def extract_tar(
    stream: BinaryIO,
    dest: Path,
    *,
    label: str,
    on_symlink: Callable[[PurePosixPath, str], None] | None = None,
    owner: tuple[int, int] | None = None,
    max_bytes: int | None = None,
) -> int:
    """Extract a tar stream into ``dest`` without ever writing outside it.

    Only directories and regular files are written.  Symlinks are handed to ``on_symlink``
    (the format maps tablespace links); anything else (devices, hard links, absolute or
    ``..`` paths) is refused as a corrupt or hostile backup.  A tar without its end-of-archive
    marker (a zero block) is refused as truncated.  Returns bytes written.

    Every member is judged by a :class:`~._tarstream.Guard` before it is written: a name too long
    for the filesystem, a path an earlier member made something else (a file then a directory of
    that name, a member under a file), a size past what this object (``max_bytes``, when
    its format declares it) or the restore (the disk pre-flight's reservation, shared through
    :data:`~._tarstream.CURRENT`) may still write: each is refused naming the member and ``label``.

    Members are read with large reads (:mod:`.tarstream`) and written by a second thread.
    """
    from ._tarstream import CURRENT, Extraction, Guard, TarStream, TruncatedTar, Writer

    state = CURRENT.get()
    if max_bytes is not None:
        state = Extraction(state.budget if state else None, state.paths if state else None, max_bytes)
    guard = Guard(label, dest, state)
    total = 0
    tar = TarStream(stream)
    try:
        with Writer() as writer:
            for member in tar.members():
                total += _extract_member(tar, member, dest, label, on_symlink, owner, writer, guard)
        while stream.read(_CHUNK):  # to EOF: codecs check their trailer (CRC, checksum) only there
            pass
    except TruncatedTar as exc:
        raise CorruptBackup(f"{label}: the tar archive {exc}",
                            checked="the block after the last member (a zero block ends a complete tar)",
                            fix="the object is truncated or corrupt; restore from another backup") from exc
    except tarfile.TarError as exc:
        what = f"has an {exc}" if str(exc).startswith("unreadable member header") else f"is not valid ({exc})"
        raise CorruptBackup(f"{label}: the tar archive {what}" if tar.tell() else
                            f"{label}: not a valid tar archive ({exc})",
                            checked="reading the tar stream member by member",
                            fix="the object is truncated or corrupt; restore from another backup") from exc
    except _codec_errors() as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            named = guard.os_error(exc)
            if named is not None:  # the archive's shape, met by the filesystem (another object's path)
                raise named from exc
            raise
        raise _damaged(label, exc) from exc
    return total


def _extract_member(tar, member, dest, label, on_symlink, owner, writer, guard) -> int:
    rel = _safe_relpath(member.name)
    if rel is None:
        raise CorruptBackup(f"{label}: member {member.name!r} points outside the restore directory",
                            checked="every tar member's path", fix="this archive is not a PostgreSQL backup")
    target = dest / rel
    if member.isdir():
        guard.place(member.name, rel, "dir")
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, 0o700)
        if owner:
            os.chown(target, *owner)
        return 0
    if member.issym():
        if on_symlink is None:
            raise CorruptBackup(f"{label}: unexpected symlink {member.name!r} -> {member.linkname!r}",
                                checked="every tar member's type", fix="this archive is not a PostgreSQL backup")
        guard.place(member.name, rel, "link")
        on_symlink(rel, member.linkname)
        return 0
    if not member.isreg():
        raise CorruptBackup(f"{label}: member {member.name!r} has refused type {member.type!r}",
                            checked="every tar member's type (only files, directories, symlinks)",
                            fix="this archive is not a PostgreSQL backup")
    guard.place(member.name, rel, "file")
    guard.admit(member.name, member.size)
    target.parent.mkdir(parents=True, exist_ok=True)
    from ._tarstream import write_member

    return write_member(tar, target, member.size, owner, writer)
