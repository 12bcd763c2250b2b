"""The store interface: read-only access to a backup store.

An :class:`ObjectStore` has no write, delete or copy method, and a subclass that declares one is
refused when it is defined: the harness holds no write path to the backup store at all.  Keys
are relative to the source's prefix and use ``/``.

Every store (a local directory, S3, and the fetch layer that meters and parallelizes reads over
either) implements all of it, so formats never ask what kind of store they read.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

__all__ = ["ObjectInfo", "ObjectStore", "Readable"]

#: method names that would write, delete or copy: no store may have one
_WRITES = re.compile(r"^_*(put|write|upload|delete|remove|copy|create|append|rename|move)(_|$)")


class Readable(Protocol):
    """What a decoder reads from: a store's stream, or a reader over one (counting, decrypting)."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix, e.g. "wal/000000010000000000000003"
    size: int
    last_modified: datetime  # timezone-aware UTC
    etag: str | None = None


class ObjectStore(ABC):
    #: what to show a user: ``s3://bucket/prefix (endpoint http://127.0.0.1:8333)``
    description: str
    #: a store across a network: large objects are worth parallel ranged parts and a local cache
    #: (a local directory is read as one stream, and caching it would only copy it)
    remote: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        writes = sorted(name for name in vars(cls) if _WRITES.match(name))
        if writes:
            raise TypeError(f"{cls.__name__} defines {', '.join(writes)}: a backup store is read-only")

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), in key order."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` when it does not exist."""

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A streaming, read-only file object over the whole object."""

    @abstractmethod
    def open_range(self, key: str, start: int, end: int | None = None, etag: str | None = None) -> BinaryIO:
        """Bytes ``start`` up to ``end`` (exclusive, like a slice; ``None``: to the end).  With
        ``etag`` the read fails unless the object still has that version."""

    def open_part(self, key: str, start: int, end: int | None,
                  etag: str | None = None) -> tuple[BinaryIO, int | None, str | None]:
        """Like :meth:`open_range`, with what the answer tells of the whole object:
        ``(stream, total size or None, ETag or None)``.  Remote stores learn both from the same
        GET; the default asks nothing more."""
        return self.open_range(key, start, end, etag=etag), None, etag

    @abstractmethod
    def read_tail(self, key: str, nbytes: int) -> bytes:
        """The last ``nbytes`` bytes (or the whole object when smaller)."""

    @abstractmethod
    def parent(self, levels: int) -> tuple[ObjectStore, str]:
        """The same kind of store ``levels`` folders up, and the name of the folder this one is
        in (a source that points inside a repository, e.g. at ``<repo>/backup/<stanza>``)."""

    def close(self) -> None:  # noqa: B027 — a store without connections has nothing to release
        """Release connections; the store may not be used afterwards."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
