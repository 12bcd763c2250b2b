"""The opt-in download cache (``--restore-cache``): base-backup objects kept across runs.

Each object a ``materialize`` reads from an S3 store is kept under the cache directory, keyed by
the store, its key and byte range, and stamped with its identity — the ETag the store reports
(``HEAD``) when it is read.  The next run asks the store for the identity again: the same ETag
serves the local copy, a different one (the object was rewritten) fetches it anew and replaces
the entry.  A copy is only kept when it was read to its end with the expected size, and it is
renamed into place, so a cut-short run never leaves a half entry behind.

What is cached is what the network carried (compressed, encrypted as stored), not the restored
PGDATA: every run still decodes, extracts and checks it.  The directory holds production data:
mode 0700, files 0600; entries unused for :data:`MAX_AGE_DAYS` days are removed.

A run served (even partly) from the cache is marked in the evidence: ``rto.served_from_cache``
is true and the run does not count as an RTO measurement unless ``--restore-cache-counts``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

__all__ = ["BackupCache", "open_cache", "default_cache_dir", "MAX_AGE_DAYS"]

MAX_AGE_DAYS = 14
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-pgrestore" / "backups"


def open_cache(settings, store) -> BackupCache | None:
    """The cache ``settings.cache`` names, for an S3 store (a local source needs none)."""
    root = getattr(settings, "cache", None)
    if root is None:
        return None
    if not store.remote:
        log.info("--restore-cache: %s is local, nothing to cache", store.description)
        return None
    return BackupCache(Path(root))


class BackupCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)
        self.hits = self.misses = self.invalidated = 0
        self.bytes_from_cache = self.bytes_stored = 0
        self._lock = threading.Lock()
        self._pruned = self.prune()

    # -- one object ---------------------------------------------------------------------------
    def open(self, store, key: str, fetch: Callable[[str | None], BinaryIO], *, meter=None,
             start: int = 0, end: int | None = None) -> BinaryIO:
        """The object's bytes: from the cache when its identity is unchanged, else ``fetch(etag)``
        (read guarded by that ETag) teed into a new entry."""
        info = store.stat(key)
        if info is None:
            return fetch(None)  # the store's own "not found" error follows
        identity = info.etag or f"{info.size}@{info.last_modified.isoformat()}"
        size = (min(end, info.size) if end is not None else info.size) - start
        entry = self._entry(store.description, key, start, end)
        meta = _read_json(entry / "meta.json")
        data = entry / "data"
        if meta and meta.get("identity") == identity and _size(data) == size:
            self._count(hits=1, cached=size)
            meta["used"] = time.time()
            _write_json(entry / "meta.json", meta)
            return io.BufferedReader(_Counted(open(data, "rb"), meter), buffer_size=_CHUNK)
        self._count(misses=1, invalidated=1 if meta else 0)
        if meta:
            log.info("cache entry for %s is stale (ETag %s, now %s): fetching it again", key,
                     meta.get("identity"), identity)
        stream = fetch(info.etag)
        entry.mkdir(mode=0o700, parents=True, exist_ok=True)
        new_meta = {"source": store.description, "key": key, "start": start, "end": end, "identity": identity,
                    "size": size, "created": time.time(), "used": time.time()}
        return io.BufferedReader(_Tee(stream, entry, new_meta, self), buffer_size=_CHUNK)

    def summary(self) -> dict:
        return {"dir": str(self.root), "hits": self.hits, "misses": self.misses, "invalidated": self.invalidated,
                "bytes_from_cache": self.bytes_from_cache, "bytes_stored": self.bytes_stored,
                "served_from_cache": self.hits > 0, "pruned": self._pruned}

    # -- housekeeping -----------------------------------------------------------------------------
    def prune(self, *, max_age_days: float = MAX_AGE_DAYS) -> int:
        """Remove entries unused for ``max_age_days`` and leftovers of cut-short writes."""
        import shutil

        cutoff = time.time() - max_age_days * 86400
        removed = 0
        for entry in self.root.glob("*/*"):
            meta = _read_json(entry / "meta.json")
            if meta is None or meta.get("used", 0) < cutoff:
                if meta is None and any(p.name.startswith(".tmp") and _age(p) < 3600 for p in entry.iterdir()):
                    continue  # another run is writing it right now
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def _entry(self, source: str, key: str, start: int, end: int | None) -> Path:
        digest = hashlib.sha256(f"{source}\0{key}\0{start}\0{end}".encode()).hexdigest()
        return self.root / digest[:2] / digest

    def _count(self, *, hits: int = 0, misses: int = 0, invalidated: int = 0, cached: int = 0,
               stored: int = 0) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.invalidated += invalidated
            self.bytes_from_cache += cached
            self.bytes_stored += stored


class _Counted(io.RawIOBase):
    """A cached copy, counted as it is read (the progress line and the evidence)."""

    def __init__(self, f, meter) -> None:
        self.f, self.meter = f, meter

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.f.readinto(buf)
        if n and self.meter is not None:
            self.meter.add(cache=n)
        return n

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


class _Tee(io.RawIOBase):
    """Hands the fetched bytes on and writes them to a temporary file, renamed into the entry
    only when the object was read to its end with the expected size."""

    def __init__(self, src: BinaryIO, entry: Path, meta: dict, cache: BackupCache) -> None:
        self.src, self.entry, self.meta, self.cache = src, entry, meta, cache
        self.tmp = entry / f".tmp.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.out = os.fdopen(fd, "wb")
        self.got = 0
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self.src.readinto(buf)  # type: ignore[attr-defined]  # BinaryIO declares no readinto; streams have it
        if n:
            self.out.write(buf[:n])
            self.got += n
        elif not self.done:
            self._publish()
        return n

    def _publish(self) -> None:
        self.done = True
        self.out.close()
        if self.got != self.meta["size"]:
            self.tmp.unlink(missing_ok=True)
            return
        os.replace(self.tmp, self.entry / "data")
        _write_json(self.entry / "meta.json", self.meta)
        self.cache._count(stored=self.got)

    def close(self) -> None:
        if not self.closed:
            if not self.done:  # cut short: nothing is kept
                self.out.close()
                self.tmp.unlink(missing_ok=True)
            self.src.close()
        super().close()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp.{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 1e9
