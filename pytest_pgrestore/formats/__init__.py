"""Backup formats: how a tool lays backups and WAL out in a store, and how to read them back.

Each format knows three things: whether a listing looks like its layout (``detect``), how to
build a :class:`~pytest_pgrestore.catalog.Catalog` from the store, and how to materialize one
backup into a PGDATA directory.  WAL segments are served by key through ``open_wal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from ..catalog import Backup, Catalog
from ..errors import FormatError
from ..storage import ObjectStore

__all__ = ["BackupFormat", "Materialized", "FORMATS", "get_format"]


@dataclass
class Materialized:
    pgdata: Path
    bytes_fetched: int
    bytes_written: int
    manifest: Path | None = None  # backup_manifest to hand to pg_verifybackup
    tablespaces: dict[str, Path] | None = None


class BackupFormat(Protocol):
    name: str

    def __init__(self, store: ObjectStore) -> None: ...

    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        """Does the store's layout look like ours? (a few cheap listings, no download)"""

    def catalog(self) -> Catalog: ...

    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *,
                    owner: tuple[int, int] | None) -> Materialized: ...

    def open_wal(self, key: str) -> BinaryIO:
        """A decoded (decompressed, decrypted) stream of one archived WAL object."""


def _registry() -> dict[str, type]:
    from .basebackup import BaseBackupFormat
    from .walg import WalgFormat

    return {"basebackup": BaseBackupFormat, "walg": WalgFormat}


FORMATS = ("basebackup", "walg", "pgbackrest", "barman")


def get_format(store: ObjectStore, requested: str = "auto", *, env=None) -> BackupFormat:
    """The format ``requested`` (or the one whose layout the store holds); ``env`` carries the backup
    tool's own settings (WAL-G's key and concurrency variables) to formats that read them."""
    registry = _registry()

    def make(cls):
        return cls(store, env=env) if getattr(cls, "TAKES_ENV", False) else cls(store)

    if requested != "auto":
        if requested not in registry:
            raise FormatError(f"format {requested!r} is not implemented yet",
                              checked=f"implemented formats: {', '.join(sorted(registry))}",
                              fix="use --restore-format=auto or one of the implemented formats")
        return make(registry[requested])
    for cls in registry.values():
        if cls.detect(store):
            return make(cls)
    top = sorted({info.key.split("/", 1)[0] for _, info in zip(range(200), store.list(""), strict=False)})
    looked = "; ".join(f"{name}: {cls.LAYOUT_HINT}" for name, cls in registry.items())
    found = ", ".join(top[:10]) or "nothing (the prefix is empty)"
    raise FormatError(f"no backup found under {store.description}",
                      checked=f"looked for {looked}; found {found}",
                      fix="point --restore-source at the prefix your backup tool writes to "
                          "(the folder holding basebackups/ and wal/)")
