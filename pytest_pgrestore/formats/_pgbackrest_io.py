"""Small I/O helpers of the pgBackRest and barman readers: explicit codecs, a parent store."""

from __future__ import annotations

import io
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from ..errors import CorruptBackup, FormatError

if TYPE_CHECKING:
    from ..store._base import Readable

__all__ = ["open_codec", "decode_whole", "WHOLE_CODECS"]

#: the codecs :func:`decode_whole` decodes
WHOLE_CODECS = frozenset({"none", "lz4", "zst", "gz", "bz2"})

_CHUNK = 1 << 20


class _Raw(io.RawIOBase):
    def __init__(self, src: Readable) -> None:
        self.src = src

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.src.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.src.close()
        super().close()


def open_codec(raw: BinaryIO, codec: str, *, label: str, limit: int | None = None) -> BinaryIO:
    """Decode ``raw`` with the codec the repository metadata names (never guessed from bytes).

    ``codec``: none | gz | bz2 | lz4 | zst (pgBackRest's names). lz4 checks each frame's content
    checksum itself, as the other codecs check their own trailers.

    ``limit``: the most bytes the stream may decode to (a pgBackRest file's ``size`` in
    backup.manifest).  A read that would pass it raises :class:`CorruptBackup` naming ``label``
    (the file and its repository key) and the cap, before its bytes are returned: a caller
    that writes what it reads writes at most ``limit`` bytes, however far a forged or damaged
    file expands.  pgBackRest itself checks size and SHA-1 only once the whole file is written.
    """
    # every decoder is a file of bytes; typing's BinaryIO does not count io.BufferedIOBase
    # (GzipFile, BZ2File, Lz4Reader) as one
    decoder = _decoder(raw, codec, label)
    return cast(BinaryIO, decoder if limit is None else _Capped(decoder, limit, label, codec))


class _Capped:
    """A decoded stream that refuses to return more than ``limit`` bytes in all."""

    def __init__(self, inner, limit: int, label: str, codec: str) -> None:
        self.inner, self.limit, self.label, self.codec = inner, limit, label, codec
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # everything: in steps, each checked
            parts = []
            while chunk := self.read(_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        # never ask for more than one byte past the cap: the decoder stops there too
        data = self.inner.read(min(n, self.limit - self.count + 1))
        if self.count + len(data) > self.limit:
            raise CorruptBackup(
                f"{self.label} decodes to more than its size in backup.manifest ({self.limit} bytes): stopped "
                f"at that cap, {self.count} bytes written",
                checked=f"the decoded {self.codec} stream against the file's manifest size, as it is written",
                fix="the repository file is damaged or forged: run `pgbackrest verify` on the repository, and "
                    "restore another backup")
        self.count += len(data)
        return data

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> _Capped:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decoder(raw: BinaryIO, codec: str, label: str) -> io.BufferedIOBase | IO[bytes]:
    if codec == "lz4":  # decoded in large steps straight off ``raw`` (no LZ4FrameFile 8 KiB reads)
        from ._codecs import Lz4Reader

        return Lz4Reader(raw)
    stream = io.BufferedReader(_Raw(raw), buffer_size=_CHUNK)
    if codec == "none":
        return stream
    if codec == "gz":
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")
    if codec == "zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_CHUNK, read_across_frames=True)
    if codec == "bz2":
        import bz2

        return bz2.BZ2File(stream, mode="rb")
    raise FormatError(f"{label}: compression {codec!r} is not supported",
                      checked="the compression the repository metadata names",
                      fix="supported: none, gz, bz2, lz4, zst")


def decode_whole(data: bytes, codec: str, limit: int) -> bytes:
    """``data`` (one whole repository file) decoded in one call, at most ``limit`` bytes of output.

    For small files: one call instead of a stream of reads saves the per-call overhead that
    dominates a few-KB file.  Raises ValueError for a stream that is damaged or ends early; the
    output is cut at ``limit`` (the caller's size check then fails), so a forged file cannot make
    a bomb of it.
    """
    if codec == "none":
        return data
    if codec == "lz4":
        import lz4.frame

        dec = lz4.frame.LZ4FrameDecompressor()
        out = dec.decompress(data, max_length=limit)
        done = dec.eof
    elif codec == "zst":
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
                out = reader.read(limit)
                done = not reader.read(1)
        except zstandard.ZstdError as exc:
            raise ValueError(str(exc)) from exc
    elif codec == "gz":
        import zlib

        zd = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = zd.decompress(data, limit)
        done = zd.eof
    elif codec == "bz2":
        import bz2

        bd = bz2.BZ2Decompressor()
        out = bd.decompress(data, max_length=limit)
        done = bd.eof
    else:
        raise ValueError(f"compression {codec!r} is not supported")
    if not done and len(out) < limit:
        raise ValueError(f"the {codec} stream ends early ({len(data)} bytes read)")
    return out

