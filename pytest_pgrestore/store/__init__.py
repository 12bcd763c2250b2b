"""Read-only access to a backup store: the interface (:mod:`.base`) and one module per kind of
store (:mod:`.local`, :mod:`.s3`); :func:`open_store` picks one for a source."""

from __future__ import annotations

from ._base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "open_store"]


def open_store(source, *, env=None) -> ObjectStore:
    """Open the store a parsed :class:`~pytest_pgrestore.settings._options.Source` points at."""
    if source.scheme == "file":
        from ._local import LocalStore

        return LocalStore(source.path)
    if source.scheme == "s3":
        from ._s3 import S3Store

        return S3Store(source.bucket, source.prefix, env=env)
    raise ValueError(f"unsupported scheme {source.scheme!r}")  # config.parse_source refuses these first
