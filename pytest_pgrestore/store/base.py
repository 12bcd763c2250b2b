"""The store interface: read-only access to a backup store.

An :class:`ObjectStore` has no write, delete or copy method: the harness holds no write path to
the backup store at all.  Keys are relative to the source's prefix and use ``/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

__all__ = ["ObjectInfo", "ObjectStore"]


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix, e.g. "wal/000000010000000000000003"
    size: int
    last_modified: datetime  # timezone-aware UTC
    etag: str | None = None


class ObjectStore(Protocol):
    #: what to show a user: ``s3://bucket/prefix (endpoint http://127.0.0.1:8333)``
    description: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), in key order."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's info, or ``None`` when it does not exist."""

    def open(self, key: str) -> BinaryIO:
        """A streaming, read-only file object over the whole object."""

    def read_tail(self, key: str, nbytes: int) -> bytes:
        """The last ``nbytes`` bytes (or the whole object when smaller)."""

    def close(self) -> None: ...
