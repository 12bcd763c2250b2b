"""Materialize a WAL-G backup (full or delta chain) into PGDATA, as ``wal-g backup-fetch`` does.

Order (``internal/backup_fetch_handler.go`` ``deltaFetchRecursionOld``, ``backup.go``
``GetFilesToUnwrap``/``GetBaseFilesToUnwrap``): the full backup of the chain first, restricted to
the files later levels skip or increment; then each delta, its increments applied on top; the
requested backup's ``part_*``/``copy_*`` tars in parallel (``--restore-fetch-concurrency``, which
falls back on ``WALG_DOWNLOAD_CONCURRENCY``), then its ``backup_label`` tar, and ``pg_control`` last of all.  Tablespace links are rebuilt from the
sentinel's ``Spec`` under the run directory (``setTablespacePaths``), never at the original path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from ..errors import CorruptBackup, FormatError, PgRestoreError
from ._base import Materialized
from ._catalog import Backup
from ._parallel import fetch_workers
from ._tar_materialize import TarObject, extract_tars
from ._walg_layout import tar_kind
from ._walg_tar import LevelFilter, extract_walg_tar, member_key

log = logging.getLogger(__name__)

__all__ = ["materialize", "UTILITY_FILES"]

UTILITY_FILES = ("global/pg_control", "backup_label", "tablespace_map")


def _files(fmt, backup: Backup) -> dict[str, dict] | None:
    """The backup's ``Files`` (from files_metadata.json, or a legacy sentinel); None = unknown."""
    sentinel = backup.details["sentinel"]
    key = backup.details.get("files_metadata")
    files = None
    if key and not sentinel.files_metadata_disabled:
        files = fmt._read_json(key).get("Files")
    if files is None and sentinel.files:
        files = sentinel.files
    if not files:
        return None
    return {member_key(k): v or {} for k, v in files.items()}


def _levels(fmt, chain: list[Backup]) -> list[tuple[Backup, LevelFilter]]:
    """For each backup of the chain (full first): which members it contributes."""
    out: list[tuple[Backup, LevelFilter]] = []
    wanted: set[str] | None = None
    for depth, b in enumerate(reversed(chain)):  # requested backup first
        files = _files(fmt, b)
        sentinel = b.details["sentinel"]
        if files is None and sentinel.is_delta:
            raise FormatError(f"delta backup {b.name} has no file list, so its increments cannot be placed",
                              checked=f"{b.name}/files_metadata.json and the sentinel's Files",
                              fix="restore its full backup, or a delta taken with files metadata")
        if depth == 0:
            wanted = None if files is None else set(files) | set(UTILITY_FILES)
        incremented = {k for k, v in (files or {}).items() if v.get("IsIncremented")} if sentinel.is_delta else set()
        out.append((b, LevelFilter(wanted=wanted, incremented=incremented, skip=set())))
        if sentinel.is_delta:  # the parent contributes what this level skipped or incremented
            assert files is not None, "a delta without a file list is refused above"
            wanted = {k for k in (wanted if wanted is not None else files)
                      if k in files and (files[k].get("IsSkipped") or files[k].get("IsIncremented"))}
    return list(reversed(out))


def _tablespaces(backup: Backup, pgdata: Path, run_dir: Path, owner) -> dict[str, Path]:
    spec = backup.details["sentinel"].spec or {}
    links: dict[str, Path] = {}
    for oid in spec.get("tablespaces") or []:
        entry = spec.get(str(oid)) or {}
        link = entry.get("link") or f"pg_tblspc/{oid}"
        if not str(oid).isdigit() or member_key(link) != f"pg_tblspc/{oid}":
            raise CorruptBackup(f"backup {backup.name}: tablespace spec {oid!r} -> {link!r} is not pg_tblspc/<oid>",
                                checked="the sentinel's Spec", fix="the sentinel is damaged")
        dest = run_dir / "tablespaces" / str(oid)
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        (pgdata / "pg_tblspc").mkdir(mode=0o700, parents=True, exist_ok=True)
        os.symlink(dest, pgdata / "pg_tblspc" / str(oid))
        for p in (dest, dest.parent, pgdata / "pg_tblspc"):
            if owner:
                os.chown(p, *owner)
        links[str(oid)] = dest
    return links


def materialize(fmt, backup: Backup, pgdata: Path, run_dir: Path, *, owner=None) -> Materialized:
    refusal = backup.details.get("refusal")
    if isinstance(refusal, PgRestoreError):
        raise refusal
    chain = _chain(fmt, backup)
    fmt.check_complete(backup)  # the plan checked it too: a fallback backup, or a store changed since
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner:
        os.chown(pgdata, *owner)
    links = _tablespaces(backup, pgdata, run_dir, owner)
    levels = _levels(fmt, chain)
    fetched = written = 0
    for level_backup, level in levels:
        last = level_backup is backup
        if links and last:
            level.skip.add("tablespace_map")  # its paths are production's; our links replace it
        f, w = _extract_level(fmt, level_backup, level, pgdata, owner, final=last)
        fetched += f
        written += w
    _tablespace_map_links(pgdata, run_dir, owner, links)
    (pgdata / "pg_wal").mkdir(mode=0o700, exist_ok=True)
    return Materialized(pgdata=pgdata, bytes_fetched=fetched, bytes_written=written, tablespaces=links or None,
                        contents_verified=False,
                        contents_check="WAL-G records no per-file checksums: the tars' member lists were checked "
                                       "against files_metadata.json, the file contents could not be")


def _chain(fmt, backup: Backup) -> list[Backup]:
    """The backups from the chain's full backup to ``backup``, as the catalog saw them."""
    names = backup.details.get("chain") or [backup.name]
    known = getattr(fmt, "_by_name", {})
    if not all(n in known for n in names[:-1]):
        known = {b.name: b for b in fmt.catalog().backups}
    missing = [n for n in names[:-1] if n not in known]
    if missing:
        raise FormatError(f"backup {missing[0]}, a parent of {backup.name}, disappeared from the store",
                          checked="a fresh listing of basebackups_005/",
                          fix="retry; retention may have deleted it meanwhile")
    return [known[n] for n in names[:-1]] + [backup]


def _extract_level(fmt, backup: Backup, level: LevelFilter, pgdata: Path, owner, *, final: bool) -> tuple[int, int]:
    tars: dict[str, str] = backup.details["tars"]
    kinds = {f: kind for f in tars if (kind := tar_kind(f)) is not None}  # the catalog keeps tars only
    concurrent = sorted((f for f, k in kinds.items() if k[0] in ("part", "copy")), key=lambda f: kinds[f][1])
    label_tars = [f for f, k in kinds.items() if k[0] == "backup_label"]
    control = [f for f, k in kinds.items() if k[0] == "pg_control"]
    if final and not control and not _wale_name(backup.name):
        raise CorruptBackup(f"backup {backup.name} has no pg_control tar",
                            checked=f"{len(tars)} objects under {backup.name}/tar_partitions/",
                            fix="the backup is incomplete; restore another one")

    def extract(stream: BinaryIO, obj: TarObject) -> int:
        return _extract_one(fmt, stream, obj.key, pgdata, level, owner)

    def run(names: list[str], workers: int) -> tuple[int, int]:
        # no TarObject.max_bytes: WAL-G records no tar's own size (files_metadata.json has none, the
        # sentinel's UncompressedSize is the whole backup's), so each object is held only to the
        # restore's reservation (restore._diskcheck._walg_chain_size), which holds the chain's tars
        return extract_tars(fmt.store, [TarObject(tars[f], pgdata) for f in names], workers=workers,
                            name="walg-fetch", decode=lambda raw, key: fmt.decode(raw, key, tar=True),
                            extract=extract)

    fetched, written = run(concurrent, fetch_workers(fmt))
    if final:  # backup_label/tablespace_map overwrite any stale copy; pg_control is written last, in order
        later = run(label_tars + control, 1)
        fetched, written = fetched + later[0], written + later[1]
    return fetched, written


def _wale_name(name: str) -> bool:
    return len(name.split("_")) == 3 and len(name.split("_")[2]) == 8  # base_<seg>_<offset>


def _extract_one(fmt, stream: BinaryIO, key: str, pgdata: Path, level: LevelFilter, owner) -> int:
    try:
        return extract_walg_tar(stream, pgdata, label=key, level=level, owner=owner, block_size=fmt.block_size)
    except PgRestoreError:
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise  # a local I/O error (disk full, …), not a property of the object
        raise _damaged(key, exc, fmt) from exc
    except Exception as exc:  # codec errors have no common base (ZstdError, LZ4 RuntimeError, brotli.error)
        raise _damaged(key, exc, fmt) from exc


def _damaged(key: str, exc: BaseException, fmt) -> CorruptBackup:
    from ._walg_layout import codec_of

    codec = codec_of(key, tar=True)
    maybe = "" if fmt.key is not None or codec != "brotli" else \
        " (brotli has no magic bytes: if WAL-G encrypted this backup, set WALG_LIBSODIUM_KEY)"
    return CorruptBackup(f"{key}: the object cannot be decoded as {codec or 'a plain tar'} ({exc}){maybe}",
                         checked="decompressing the object end to end, with its frame checksums",
                         fix="the object is truncated or corrupt; restore from another backup")


def _tablespace_map_links(pgdata: Path, run_dir: Path, owner, links: dict[str, Path]) -> None:
    """Streamed (remote) backups keep tablespace_map and no Spec: point its links into the run dir."""
    tsmap = pgdata / "tablespace_map"
    if links or not tsmap.exists() or tsmap.stat().st_size == 0:
        return
    for line in tsmap.read_text().splitlines():
        oid = line.split(" ", 1)[0]
        if not oid.isdigit():
            continue
        link = pgdata / "pg_tblspc" / oid
        if link.exists() or link.is_symlink():
            continue  # extracted as a directory: PostgreSQL follows it as is
        dest = run_dir / "tablespaces" / oid
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.symlink(dest, link)
        if owner:
            os.chown(dest, *owner)
    tsmap.unlink()

