"""Small I/O helpers of the pgBackRest and barman readers: explicit codecs, a parent store."""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from ..errors import FormatError
from ..storage import ObjectStore

__all__ = ["open_codec", "reroot"]

_CHUNK = 1 << 20


class _Raw(io.RawIOBase):
    def __init__(self, src) -> None:
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


class _Zlib(io.RawIOBase):
    """A zlib stream (pgBackRest's gz in raw bundles: deflate with a zlib header, no gzip header)."""

    def __init__(self, src) -> None:
        self.src, self.dec, self.buf = src, zlib.decompressobj(zlib.MAX_WBITS), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while not self.buf:
            if self.dec.unconsumed_tail:
                data = self.dec.unconsumed_tail
            elif self.dec.eof:
                return 0
            else:
                data = self.src.read(1 << 16)
                if not data:
                    raise EOFError("zlib stream ends early")
            self.buf = self.dec.decompress(data, _CHUNK)
        n = min(len(buf), len(self.buf))
        buf[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def close(self) -> None:
        self.src.close()
        super().close()


def open_codec(raw: BinaryIO, codec: str, *, label: str) -> BinaryIO:
    """Decode ``raw`` with the codec the repository metadata names (never guessed from bytes).

    ``codec``: none | gz | gz-raw | bz2 | bz2-raw | lz4 | lz4-raw | zst | zst-raw (pgBackRest names;
    ``-raw`` is how bundled files are stored when ``backup-bundle-raw`` is set).
    """
    stream = io.BufferedReader(_Raw(raw), buffer_size=_CHUNK)
    if codec in ("none", "none-raw"):
        return stream
    if codec == "gz":
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")
    if codec == "gz-raw":
        return io.BufferedReader(_Zlib(stream), buffer_size=_CHUNK)
    if codec in ("lz4", "lz4-raw"):  # raw: a frame without content checksum, same decoder
        import lz4.frame

        return lz4.frame.LZ4FrameFile(stream, mode="rb")
    if codec in ("zst", "zst-raw"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(stream, read_size=_CHUNK, read_across_frames=True)
    if codec in ("bz2", "bz2-raw"):
        import bz2

        return bz2.BZ2File(stream, mode="rb")
    raise FormatError(f"{label}: compression {codec!r} is not supported",
                      checked="the compression the repository metadata names",
                      fix="supported: none, gz, bz2, lz4, zst")


def reroot(store: ObjectStore, levels: int) -> tuple[ObjectStore, str]:
    """The same store ``levels`` folders up, and the name of the folder the source pointed at.

    Used when a source points straight at ``<repo>/backup/<stanza>``: its WAL lives in a sibling.
    """
    from ..storage.local import LocalStore

    if isinstance(store, LocalStore):
        root = store.root
        return LocalStore(root.parents[levels - 1]), root.name
    from ..storage.s3 import S3Store

    if isinstance(store, S3Store):
        parts = store.prefix.strip("/").split("/")
        if len(parts) < levels:
            raise FormatError(f"{store.description} has no parent folder {levels} levels up",
                              fix="point the source at the repository root")
        parent = "/".join(parts[:-levels])
        return S3Store(store.bucket, parent, settings=store.settings), parts[-1]
    raise FormatError(f"cannot reach the parent folder of {store.description}",
                      fix="point the source at the repository root")
