"""Backup formats: how a tool lays backups and WAL out in a store, and how to read them back.

Each format knows three things: whether a listing looks like its layout (``detect``), how to
build a :class:`~pytest_pgrestore.formats._catalog.Catalog` from the store, and how to materialize one
backup into a PGDATA directory.  WAL segments are served by key through ``open_wal``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import FormatError
from ..store import ObjectStore
from ._base import BackupFormat, Materialized

__all__ = ["BackupFormat", "Materialized", "FORMATS", "get_format"]


def _registry() -> dict[str, type[BackupFormat]]:
    """Formats in detection order: the cheapest, most specific layouts first."""
    from ._barman import BarmanFormat
    from ._basebackup import BaseBackupFormat
    from ._pgbackrest import PgBackRestFormat
    from ._walg import WalgFormat

    return {"basebackup": BaseBackupFormat, "walg": WalgFormat, "pgbackrest": PgBackRestFormat,
            "barman": BarmanFormat}


FORMATS = ("basebackup", "walg", "pgbackrest", "barman")


def _make(cls: type[BackupFormat], store: ObjectStore, env: Mapping[str, str] | None,
          selector: dict[str, str]) -> BackupFormat:
    key = getattr(cls, "SELECTOR", None)  # "stanza" (pgBackRest) or "server" (barman)
    if selector and key not in selector:
        given = ", ".join(f"?{k}=" for k in selector)
        raise FormatError(f"{given} does not apply to the {cls.name} format",
                          checked=f"the source's query; {cls.name} takes "
                                  + (f"?{key}=NAME" if key else "no selector"),
                          fix="?stanza= is for pgBackRest repositories, ?server= for barman-cloud ones; "
                              "drop the query or fix --restore-format")
    kwargs: dict[str, object] = {}
    if getattr(cls, "TAKES_ENV", False):
        kwargs["env"] = env
    if key:
        kwargs["selector"] = selector
    return cls(store, **kwargs)


def get_format(store: ObjectStore, requested: str = "auto", *, env: Mapping[str, str] | None = None,
               selector: dict[str, str] | None = None, concurrency: int | None = None) -> BackupFormat:
    """The format ``requested`` (or the one whose layout the store holds).

    ``env`` carries the backup tool's own settings (WAL-G's key variables) to formats that read
    them; ``selector`` is the source's ``?stanza=`` / ``?server=`` query; ``concurrency`` is the
    run's ``--restore-fetch-concurrency`` (objects fetched at once, see ``parallel.fetch_workers``).
    """
    fmt = _get_format(store, requested, env=env, selector=selector)
    if concurrency:
        fmt.concurrency = concurrency  # type: ignore[attr-defined]
    return fmt


def _get_format(store: ObjectStore, requested: str, *, env: Mapping[str, str] | None,
                selector: dict[str, str] | None) -> BackupFormat:
    registry = _registry()
    selector = dict(selector or {})
    if requested != "auto":
        if requested not in registry:
            raise FormatError(f"format {requested!r} is not implemented yet",
                              checked=f"implemented formats: {', '.join(sorted(registry))}",
                              fix="use --restore-format=auto or one of the implemented formats")
        return _make(registry[requested], store, env, selector)
    candidates = {name: cls for name, cls in registry.items()
                  if not selector or getattr(cls, "SELECTOR", None) in selector}
    for cls in candidates.values():
        if cls.detect(store):
            return _make(cls, store, env, selector)
    top = sorted({info.key.split("/", 1)[0] for _, info in zip(range(200), store.list(""), strict=False)})
    looked = "; ".join(f"{name}: {cls.LAYOUT_HINT}" for name, cls in candidates.items())
    found = ", ".join(top[:10]) or "nothing (the prefix is empty)"
    raise FormatError(f"no backup found under {store.description}",
                      checked=f"looked for {looked}; found {found}",
                      fix="point --restore-source at the prefix your backup tool writes to: the folder holding "
                          "basebackups/ and wal/ (basebackup), basebackups_005/ and wal_005/ (WAL-G), "
                          "archive/ and backup/ (pgBackRest repo1-path) or the barman-cloud destination URL")
