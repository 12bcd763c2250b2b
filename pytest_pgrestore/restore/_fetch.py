"""How a base backup's bytes come off the store: parallel ranged reads, a byte meter, the cache.

For the time of one ``materialize`` the format's store is wrapped in a :class:`FetchLayer`:

* every object is first read as one stream (one GET).  For an object larger than one part
  (8 MiB) the reader's time blocked on that stream is watched part by part: while the reader,
  not the link, is the slower side, the stream goes on to the end (on a fast link parallel GETs
  only cost CPU, ours and the server's — measured in bench/).  Once the reader spent more than
  half of a part's time waiting for bytes, the stream is closed at that part's end and the rest
  comes as consecutive ranged GETs ahead of the reader, all guarded by ``If-Match`` on the ETag
  the first response carried, so the bytes are one version of the object: two in flight, twice
  as many each time the reader has to wait for one, up to ``concurrency``.  Those parts wait in
  memory, at most ``buffer_bytes`` for the whole fetch, so peak memory does not grow with the
  backup.  The reader sees one ordinary stream: decompression and tar extraction stay what the
  format made them, one stream per object;
* every byte read from the store (or the cache) is counted, for the progress line and the
  evidence (``result.evidence["fetch"]``);
* with ``--restore-cache`` each object is served from, or kept in, :mod:`.cache`.

Stores without ranged reads (``file://``) are only metered.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import SourceError
from ..formats._parallel import DEFAULT_FETCH_CONCURRENCY
from ..store._base import ObjectStore

log = logging.getLogger(__name__)

__all__ = ["FetchLayer", "FetchStats", "fetching", "PART_SIZE", "DEFAULT_CONCURRENCY"]

PART_SIZE = 8 << 20
DEFAULT_CONCURRENCY = DEFAULT_FETCH_CONCURRENCY  # one default for every fetch path
#: parts waiting in memory across the whole fetch, beyond the one each reader is consuming
DEFAULT_BUFFER = 64 << 20
_READ = 1 << 20


@dataclass
class FetchStats:
    concurrency: int
    part_size: int
    bytes_network: int = 0  # read from the store
    bytes_cache: int = 0  # served from --restore-cache
    objects: int = 0
    ranged_objects: int = 0  # read as several ranged GETs
    parts: int = 0  # ranged GETs beyond each object's first
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, network: int = 0, cache: int = 0) -> None:
        with self._lock:
            self.bytes_network += network
            self.bytes_cache += cache

    @property
    def bytes_total(self) -> int:
        return self.bytes_network + self.bytes_cache

    def to_dict(self) -> dict:
        rate = self.bytes_total / self.seconds if self.seconds else None
        return {"concurrency": self.concurrency, "part_size": self.part_size, "bytes_network": self.bytes_network,
                "bytes_cache": self.bytes_cache, "objects": self.objects, "ranged_objects": self.ranged_objects,
                "parts": self.parts, "seconds": round(self.seconds, 3),
                "bytes_per_second": round(rate) if rate else None}


class _Slots:
    """Parts that may wait in memory; a reader with nothing in flight may always take one."""

    def __init__(self, count: int) -> None:
        self.free = count
        self._lock = threading.Lock()

    def take(self, *, force: bool) -> bool:
        with self._lock:
            if self.free > 0 or force:
                self.free -= 1
                return True
            return False

    def give(self, n: int = 1) -> None:
        with self._lock:
            self.free += n


class FetchLayer(ObjectStore):
    """An :class:`~pytest_pgrestore.store.ObjectStore` over ``store`` that reads large objects
    with parallel ranged GETs and counts every byte.  Read-only like the store it wraps."""

    def __init__(self, store, *, concurrency: int = DEFAULT_CONCURRENCY, part_size: int = PART_SIZE,
                 buffer_bytes: int = DEFAULT_BUFFER, cache=None) -> None:
        self.store = store
        self.description = store.description
        self.concurrency = concurrency  # also how many whole objects a format fetches at once
        self.part_size = part_size
        self.depth = max(2, concurrency)  # parts in flight ahead of one reader
        self.stats = FetchStats(concurrency=concurrency, part_size=part_size)
        self.cache = cache
        self._slots = _Slots(max(1, buffer_bytes // part_size))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch-part")
        self._ranged = store.remote
        self.remote = store.remote

    def parent(self, levels: int) -> tuple[ObjectStore, str]:
        return self.store.parent(levels)

    def list(self, prefix: str = ""):
        return self.store.list(prefix)

    def stat(self, key: str):
        return self.store.stat(key)

    def read_tail(self, key: str, nbytes: int) -> bytes:
        return self.store.read_tail(key, nbytes)

    def open(self, key: str) -> BinaryIO:
        with self.stats._lock:
            self.stats.objects += 1
        if self.cache is not None:
            return self.cache.open(self.store, key, lambda etag: self._fetch(key, etag), meter=self.stats)
        return self._fetch(key, None)

    def open_range(self, key: str, start: int, end: int | None = None, etag: str | None = None) -> BinaryIO:
        with self.stats._lock:
            self.stats.objects += 1

        def fetch(tag: str | None) -> BinaryIO:
            return io.BufferedReader(_Metered(self.store.open_range(key, start, end, etag=tag or etag),
                                              self.stats), buffer_size=1 << 20)

        if self.cache is not None:
            return self.cache.open(self.store, key, fetch, meter=self.stats, start=start, end=end)
        return fetch(None)

    def close(self) -> None:
        """Stops the part downloads; the wrapped store stays open (it belongs to the format)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- one object -------------------------------------------------------------------------
    def _fetch(self, key: str, etag: str | None) -> BinaryIO:
        if not self._ranged or self.stats.concurrency == 1:  # one download in flight: a plain stream
            opened = self.store.open_range(key, 0, None, etag=etag) if etag else self.store.open(key)
            return io.BufferedReader(_Metered(opened, self.stats), buffer_size=1 << 20)
        first, total, etag = self.store.open_part(key, 0, None, etag=etag)  # all of it, as one stream
        if total is None or total <= self.part_size:
            return io.BufferedReader(_Metered(first, self.stats), buffer_size=1 << 20)
        return io.BufferedReader(_PartReader(self, key, first, total, etag), buffer_size=1 << 20)


class _Metered(io.RawIOBase):
    def __init__(self, raw: BinaryIO, stats: FetchStats) -> None:
        self.raw, self.stats = raw, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.raw.readinto(buf) if hasattr(self.raw, "readinto") else _read_into(self.raw, buf)
        if n:
            self.stats.add(network=n)
        return n or 0

    def close(self) -> None:
        if not self.closed:
            self.raw.close()
        super().close()


def _read_into(raw: BinaryIO, buf) -> int:
    data = raw.read(len(buf))
    buf[: len(data)] = data
    return len(data)


class _PartReader(io.RawIOBase):
    """One object: streamed from its first GET while the reader keeps the link busy; once the
    reader waits on the link, the rest as parallel ranged parts fetched ahead."""

    #: the share of a part's reading time spent blocked on the stream above which the rest of the
    #: object is fetched in parallel parts
    NETWORK_BOUND = 0.5

    def __init__(self, layer: FetchLayer, key: str, first: BinaryIO, total: int, etag: str | None) -> None:
        self.layer, self.key, self.total, self.etag = layer, key, total, etag
        self._first: BinaryIO | None = first
        self._checkpoint = min(layer.part_size, total)  # where the stream's pace is judged next
        self._since: float | None = None  # when the reader first asked for bytes
        self._blocked = 0.0
        self._pending: deque[Future] = deque()
        self._next = total  # offset of the next part to schedule (none while streaming)
        self._view: memoryview | None = None
        self._pos = 0  # within _view
        self._delivered = 0
        self._want = 2  # parts in flight once split: the link was already behind

    def readable(self) -> bool:
        return True

    def _from_stream(self, buf) -> int:
        """Read from the first GET's stream, one checkpoint (a part) at a time.  When the reader
        comes back for the bytes past a checkpoint, the time since the last one (its reads and
        its own work on them) is judged: blocked on the stream for most of it, the stream is
        closed there and 0 returned, the rest to come in parallel parts."""
        t = time.monotonic()
        if self._since is None:
            self._since = t
        if self._delivered == self._checkpoint:
            if self._blocked > (t - self._since) * self.NETWORK_BOUND:
                self._close_stream()  # the link is behind the reader
                self._next = self._delivered
                with self.layer.stats._lock:
                    self.layer.stats.ranged_objects += 1
                self._schedule()
                return 0
            self._checkpoint = min(self._checkpoint + self.layer.part_size, self.total)
            self._since, self._blocked = t, 0.0
        room = self._checkpoint - self._delivered
        assert self._first is not None, "readinto reads the stream only while it is open"
        # typing.BinaryIO declares no readinto; every store's stream (a file, a urllib3 or lean body) has one
        n = self._first.readinto(  # type: ignore[attr-defined]
            memoryview(buf)[:room] if len(buf) > room else buf)
        self._blocked += time.monotonic() - t
        if not n:
            self._close_stream()
            return 0
        self.layer.stats.add(network=n)
        self._delivered += n
        if self._delivered == self.total:
            self._close_stream()
        return n

    def _close_stream(self) -> None:
        if self._first is not None:
            self._first.close()  # before its end: the connection is dropped, not drained
            self._first = None

    def _schedule(self, *, force: bool = False) -> None:
        """Keep up to ``depth`` parts in flight, as the memory budget allows; ``force``: the
        reader waits for its next part, which it may always fetch (no reader starves)."""
        layer = self.layer
        while self._next < self.total and len(self._pending) < self._want:
            if not layer._slots.take(force=force and not self._pending):
                return
            start, end = self._next, min(self._next + layer.part_size, self.total)
            self._pending.append(layer._pool.submit(self._download, start, end))
            self._next = end

    def _download(self, start: int, end: int) -> memoryview:
        buf = bytearray(end - start)
        view, got = memoryview(buf), 0
        raw, _total, _etag = self.layer.store.open_part(self.key, start, end, etag=self.etag)
        try:
            while got < len(buf):  # 1 MiB a read: the transport's own buffers stay small
                n = raw.readinto(view[got : got + _READ])
                if not n:
                    break
                got += n
                self.layer.stats.add(network=n)
        finally:
            raw.close()
        if got != len(buf):
            raise SourceError(f"{self.key}: bytes {start}-{end - 1} came back short ({got} of {len(buf)} bytes)",
                              checked="the length of each ranged GET of a parallel download",
                              fix="the store broke off the transfer; re-run the drill")
        with self.layer.stats._lock:
            self.layer.stats.parts += 1
        return view

    def readinto(self, buf) -> int:
        while True:
            if self._view is not None and self._pos < len(self._view):
                n = min(len(buf), len(self._view) - self._pos)
                buf[:n] = self._view[self._pos : self._pos + n]
                self._pos += n
                self._delivered += n
                return n
            if self._first is not None:
                n = self._from_stream(buf)
                if n:
                    return n
            if not self._pending and self._next < self.total:
                self._view = None
                self._schedule(force=True)
            if not self._pending:
                if self._delivered != self.total:
                    raise SourceError(f"{self.key}: {self._delivered} of {self.total} bytes delivered",
                                      checked="the object's size from the first response's Content-Range",
                                      fix="the store broke off the transfer; re-run the drill")
                return 0
            self._view, self._pos = None, 0
            fut = self._pending.popleft()
            if not fut.done():  # the network, not the reader, is behind: more parts in flight
                self._want = min(self._want * 2, self.layer.depth)
            self._view = fut.result()
            self.layer._slots.give()
            self._schedule()

    def close(self) -> None:
        if not self.closed:
            if self._first is not None:
                self._first.close()
            for fut in self._pending:
                fut.cancel()  # one already running finishes and is dropped
            self.layer._slots.give(len(self._pending))
            self._pending.clear()
            self._view = None
        super().close()


# -- the context a materialize runs in --------------------------------------------------------
@contextmanager
def fetching(fmt, settings, result, *, backup=None, progress=None) -> Iterator:
    """``fmt`` reading through a :class:`FetchLayer` over its store, for the block: materialize
    the backup with what this yields.  The stats land in ``result.evidence``."""
    from ..formats._base import reading_through
    from ._cache import open_cache

    concurrency = getattr(settings, "fetch_concurrency", None) or DEFAULT_CONCURRENCY
    cache = open_cache(settings, fmt.store)
    layer = FetchLayer(fmt.store, concurrency=concurrency, cache=cache)
    started = time.monotonic()
    watch = progress.fetch(layer.stats, total=getattr(backup, "stored_bytes", 0) or None) if progress else None
    try:
        yield reading_through(fmt, layer)
    finally:
        layer.stats.seconds = time.monotonic() - started
        if watch is not None:
            watch.close()
        layer.close()
        result.evidence["fetch"] = layer.stats.to_dict()
        if cache is not None:
            result.evidence["cache"] = cache.summary()
