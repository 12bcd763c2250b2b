"""Pre-flight: is there disk space for the restore?  Decided before a byte is downloaded.

A restore needs room for the uncompressed backup (PGDATA and its tablespaces, under the run
directory or ``--pgdata``) plus the WAL spool's window (segments fetched ahead of replay), plus
10 %.  The backup's uncompressed size comes from what the backup tool recorded:

* ``basebackup``: the sum of every file's ``Size`` in ``backup_manifest`` (stream-parsed: a
  manifest can be megabytes);
* ``walg``: the sentinel's ``UncompressedSize`` (for a delta, summed along its chain: an upper
  bound); see :func:`_walg_chain_size` for what WAL-G counts in it and when it is no bound;
* ``pgbackrest``: ``backup-info-size`` in ``backup.info`` (the database's full size);
* ``barman``: ``size`` in the backup's ``backup.info``;
* otherwise the stored (possibly compressed) size, a lower bound, and the message says so.

The check's figure is also a cap: once it passed, :func:`check_restore_space` reserves it for
extraction (``formats._tar_materialize.reserve``), which then writes at most that many bytes
under the workdir (or ``--pgdata``), however far the objects' compressed bytes expand.  A backup
whose size is only known as its stored size gets no cap: that figure is a lower bound; nor does
a WAL-G backup whose ``UncompressedSize`` does not count everything its tars hold (missing, or
a ``copy_N`` tar in its chain).
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .._fmt import human_bytes
from ..errors import DiskSpaceError
from ..formats._catalog import Backup, Catalog

__all__ = [
    "DiskSpaceError",
    "Need",
    "HEADROOM",
    "backup_size",
    "manifest_size",
    "spool_bytes",
    "check_disk",
    "check_restore_space",
    "reservation",
]

HEADROOM = 0.10
#: where a backup's size comes from when it is no upper bound of what extraction writes
_NOT_A_BOUND = ("its stored size", "no upper bound")
_SIZE = re.compile(rb'"Size"\s*:\s*(\d+)')
_CHUNK = 1 << 20


@dataclass
class Need:
    backup_bytes: int
    backup_from: str  # where the size comes from
    spool_bytes: int
    spool_from: str

    def on(self, *, data: bool, spool: bool) -> int:
        """Bytes needed on a filesystem that holds the data and/or the spool, with the headroom."""
        raw = (self.backup_bytes if data else 0) + (self.spool_bytes if spool else 0)
        return int(raw * (1 + HEADROOM))


def manifest_size(stream) -> int:
    """The sum of ``"Size": N`` in a backup_manifest, read as a stream in 1 MiB pieces."""
    total, pending = 0, b""
    while chunk := stream.read(_CHUNK):
        data = pending + chunk
        safe = len(data) - 64  # a match ending past here may still grow (its digits cut off)
        keep = max(safe, 0)
        for m in _SIZE.finditer(data):
            if m.end() >= safe:
                keep = m.start()
                break
            total += int(m.group(1))
            keep = max(m.end(), keep)
        pending = data[keep:]
    return total + sum(int(m.group(1)) for m in _SIZE.finditer(pending))


def backup_size(fmt, catalog: Catalog, backup: Backup) -> tuple[int, str]:
    """(uncompressed bytes, where that comes from) of ``backup``."""
    store = getattr(fmt, "store", None)
    manifest = backup.details.get("manifest")
    if catalog.format == "basebackup" and manifest and store is not None:
        with store.open(manifest) as raw:
            size, how = manifest_size(raw), f"the sum of Size in {manifest}"
        wal = _pg_wal_tar_bytes(catalog, backup)
        if wal:
            size, how = size + wal, how + f" + {human_bytes(wal)} of WAL in pg_wal.tar (the backup's LSN range)"
        return size, how
    if catalog.format == "walg" and backup.size is not None:
        return _walg_chain_size(catalog, backup)
    if catalog.format == "barman" and store is not None:
        barman = _barman_size(store, backup)
        if barman is not None:
            return barman, "size in the backup's backup.info"
    if backup.size is not None:
        return backup.size, f"the {catalog.format} backup's recorded size"
    return backup.stored_bytes, "its stored size (compressed: the real need is larger)"


def _pg_wal_tar_bytes(catalog: Catalog, backup: Backup) -> int:
    """What a ``-X stream`` backup's pg_wal.tar holds at most (its manifest does not list it): the
    segments from the backup's start to its end, and one more (a history file, a partial one)."""
    if not any(f.startswith("pg_wal.tar") for f in backup.details.get("tars") or {}):
        return 0
    seg = backup.segment_size or catalog.wal.segment_size or 16 << 20
    return (backup.stop_lsn // seg - backup.start_lsn // seg + 2) * seg


def _walg_chain(catalog: Catalog, backup: Backup) -> list[Backup]:
    """``backup`` and its delta parents, newest first (as far as the catalog has them)."""
    chain: list[Backup] = []
    b: Backup | None = backup
    while b is not None and all(b.name != c.name for c in chain):
        chain.append(b)
        parent = b.details.get("delta_from")
        b = catalog.backup(parent) if parent else None
    return chain


def _walg_chain_size(catalog: Catalog, backup: Backup) -> tuple[int, str]:
    """What WAL-G's sentinels say the chain's tars hold, and whether that bounds extraction.

    WAL-G's ``UncompressedSize`` (read from its source: internal/databases/postgres/
    backup_push_handler.go takes ``bundle.TarBallQueue.AllTarballsSize``, which
    internal/tar_ball.go ``PackFileTo`` and bundle.go ``UploadPgControl`` grow by each regular
    file's tar header ``Size``) is the payload of every file member of the backup's own tars: the
    part tars, ``pg_control.tar`` and ``backup_label.tar``; no tar headers.  An incremented file
    counts at its increment's size, so a delta restore writes more than its sentinel says (the
    files it patches come from the parents): summed along the chain, the figure bounds every
    member a restore of the chain writes, as extraction counts them (header sizes, each level's
    members; an increment writes at most its size in pages).  It is no bound when a backup of
    the chain has no such figure (WAL-E, or a WAL-G older than the field), nor when it holds a
    ``copy_N`` tar: the copy composer copies a parent's tar whole (copy_tar_ball_composer.go
    ``copyTar``: ``CopyObject``) and counts none of it.  ``CompressedSize`` is what WAL-G
    uploaded (``Uploader.UploadedDataSize``), ``DataCatalogSize`` the walked PGDATA's file sizes
    (bundle.go ``HandleWalkedFSObject``); files_metadata.json records no sizes and no tar's own
    uncompressed size is recorded anywhere, so WAL-G's tar objects get no per-object cap."""
    chain = _walg_chain(catalog, backup)
    total = sum(b.size or b.stored_bytes for b in chain)
    how = "UncompressedSize in the sentinel" + (f"s of its {len(chain)}-backup delta chain" if len(chain) > 1 else "")
    unsized = [b.name for b in chain if not b.size]
    copied = [b.name for b in chain if any(f.startswith("copy_") for f in b.details.get("tars") or {})]
    if unsized:
        how = (f"no upper bound: the stored size of {unsized[0]}, whose sentinel has no UncompressedSize"
               + (f", and {how}" if len(unsized) < len(chain) else ""))
    elif copied:
        how = f"no upper bound: {how}, which leaves out the copy_N tars of {copied[0]} (WAL-G copies them whole)"
    return total, how


def _barman_size(store, backup: Backup) -> int | None:
    tars = backup.details.get("tars") or {}
    key = next(iter(tars.values()), None)
    if not key:
        return None
    info = key.rsplit("/", 1)[0] + "/backup.info"
    try:
        with store.open(info) as raw:
            text = raw.read(1 << 20).decode("utf-8", "replace")
    except Exception:  # only an estimate: fall back to the stored size
        return None
    m = re.search(r"^size=(\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def spool_bytes(segments: int, segment_size: int, *, concurrency: int | None = None) -> tuple[int, str]:
    """The most WAL the spool holds at once: its prefetch window plus the downloads in flight
    (``concurrency``: the run's --restore-fetch-concurrency; None: the spool's default)."""
    from ._spool import WalSpool

    params = inspect.signature(WalSpool.__init__).parameters
    window = params["window"].default + 1 + (concurrency or params["concurrency"].default)
    n = min(segments, window)
    return n * segment_size, f"{n} × {human_bytes(segment_size)} WAL segments"


def _free(path: Path) -> tuple[Path, int, int]:
    """(existing directory, its device, free bytes for us) for ``path`` or its nearest ancestor."""
    p = path
    while not p.exists():
        p = p.parent
    st = os.statvfs(p)
    return p, os.stat(p).st_dev, st.f_bavail * st.f_frsize


def check_disk(need: Need, *, workdir: Path, pgdata: Path | None = None, backup_name: str = "") -> None:
    """Raise :class:`DiskSpaceError` unless each filesystem has room for what lands on it."""
    places = {"spool": _free(workdir), "data": _free(pgdata) if pgdata is not None else _free(workdir)}
    devices: dict[int, tuple[Path, int, set[str]]] = {}
    for what, (path, dev, free) in places.items():
        devices.setdefault(dev, (path, free, set()))[2].add(what)
    for path, free, holds in devices.values():
        needed = need.on(data="data" in holds, spool="spool" in holds)
        if free >= needed:
            continue
        parts = []
        if "data" in holds:
            parts.append(
                f"backup {backup_name} uncompressed {human_bytes(need.backup_bytes)} ({need.backup_from})"
            )
        if "spool" in holds:
            parts.append(f"WAL spool window {human_bytes(need.spool_bytes)} ({need.spool_from})")
        raise DiskSpaceError(
            f"not enough free disk space for the restore: {path} has {human_bytes(free)} free, the restore needs "
            f"{human_bytes(needed)}",
            checked=" + ".join(parts) + f" + {HEADROOM:.0%}, against the free space of {path} (statvfs)",
            fix="free space there, or point --restore-workdir (env PGRESTORE_WORKDIR) at a larger filesystem",
        )


def reservation(need: Need) -> int | None:
    """The bytes extraction may write: what the pre-flight made sure is free (backup, spool
    window and headroom) less the spool's window, which the spool bounds on its own.  None
    when the backup's size is no upper bound: its stored, compressed size, or a WAL-G chain whose
    ``UncompressedSize`` leaves something out (see :func:`_walg_chain_size`)."""
    if need.backup_from.startswith(_NOT_A_BOUND):
        return None
    return need.on(data=True, spool=True) - need.spool_bytes


def _object_keys(catalog: Catalog, backup: Backup) -> set[str] | None:
    """The backup's tar objects, which its reservation holds (None: the format keeps no list); a
    WAL-G delta's include its parents' (the restore extracts them, the figure counts them)."""
    keys: set[str] = set()
    for b in _walg_chain(catalog, backup) if catalog.format == "walg" else [backup]:
        tars = b.details.get("tars")
        if not isinstance(tars, dict) or not tars:
            return None
        keys.update(tars.values())
    return keys


def check_restore_space(fmt, catalog: Catalog, plan, *, workdir: Path, pgdata: Path | None = None,
                        concurrency: int | None = None) -> str:
    """The disk pre-flight of one planned restore; returns what was checked (for the evidence)."""
    size, how = backup_size(fmt, catalog, plan.backup)
    spool, spool_how = spool_bytes(len(plan.segments), catalog.wal.segment_size or 16 << 20,
                                   concurrency=concurrency)
    need = Need(size, how, spool, spool_how)
    check_disk(need, workdir=workdir, pgdata=pgdata, backup_name=plan.backup.name)
    from ..formats._tar_materialize import reserve

    reserve(reservation(need), f"backup {plan.backup.name} uncompressed {human_bytes(size)} ({how}) + "
            f"{HEADROOM:.0%} of it and of the WAL spool window ({human_bytes(spool)}, bounded by the spool)",
            [p for p in (workdir, pgdata) if p is not None], _object_keys(catalog, plan.backup))
    return (
        f"{human_bytes(need.on(data=True, spool=True))} needed (backup {human_bytes(size)} from {how}, "
        f"spool {human_bytes(spool)}, +{HEADROOM:.0%}), {human_bytes(_free(workdir)[2])} free in {workdir}"
    )
