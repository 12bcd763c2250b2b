"""The format interface: what every backup format implements, and what materializing returns."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol

from ..errors import CorruptBackup, PreflightError
from ..store import ObjectStore
from ._catalog import Backup, Catalog

__all__ = ["BackupFormat", "Materialized", "reading_through", "IncompleteBackup", "missing_objects"]


class IncompleteBackup(CorruptBackup, PreflightError):
    """The backup's own index (sentinel, manifest, backup.info) names objects the store does not
    hold: a corrupt backup, known from the listing, so refused before any download."""


def missing_objects(backup: str, missing: list[str], *, index: str, looked: str) -> IncompleteBackup:
    """The refusal naming the first missing keys of ``backup``."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return IncompleteBackup(
        f"backup {backup} is incomplete: {index} names {len(missing)} object(s) the store does not hold: {shown}",
        checked=f"every object {index} names against {looked}",
        fix="the backup lost objects (retention, a failed upload, a manual delete): restore another backup, "
            "and take a new one")


@dataclass
class Materialized:
    pgdata: Path
    bytes_fetched: int
    bytes_written: int
    manifest: Path | None = None  # backup_manifest to hand to pg_verifybackup
    tablespaces: dict[str, Path] | None = None
    # were the restored files checked against the backup's own checksums?  (evidence
    # ``contents_verified``); ``contents_check`` says by what, or why they could not be
    contents_verified: bool = False
    contents_check: str = ""


class BackupFormat(Protocol):
    name: str
    LAYOUT_HINT: ClassVar[str]  # what ``detect`` looks for, named when no format matches
    store: ObjectStore

    def __init__(self, store: ObjectStore) -> None: ...

    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        """Does the store's layout look like ours? (a few cheap listings, no download)"""

    def catalog(self) -> Catalog: ...

    def check_complete(self, backup: Backup) -> None:
        """Raise :class:`IncompleteBackup` when an object the backup's own index names is not in
        the store (reads the index and lists; downloads no data)."""

    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *,
                    owner: tuple[int, int] | None) -> Materialized: ...

    def open_wal(self, key: str) -> BinaryIO:
        """A decoded (decompressed, decrypted) stream of one archived WAL object."""

    def find_wal(self, name: str) -> str | None:
        """A fresh lookup of one archived WAL file (a segment or a ``.history``) by name: its key,
        or None when the archive does not hold it."""


def reading_through(fmt: BackupFormat, store: ObjectStore) -> BackupFormat:
    """A copy of ``fmt`` that reads through ``store`` (the fetch layer over its own store, or a
    spool's private reader); ``fmt`` itself is never re-pointed, so no other reader of it — a
    catalog listing, the WAL spool — finds its store swapped in the middle of a download."""
    clone = copy.copy(fmt)
    clone.store = store
    return clone
