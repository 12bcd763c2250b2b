"""The ``barman`` format: what barman-cloud-backup and barman-cloud-wal-archive write to S3.

Layout under the destination URL (see docs/formats/barman.md)::

    <server>/base/<backup_id>/backup.info                 barman's key=value file, uploaded last
    <server>/base/<backup_id>/data.tar[.gz|.bz2|.lz4|…]   PGDATA (+ data_0001.tar… past --max-archive-size)
    <server>/base/<backup_id>/<oid>.tar[…]                one per tablespace
    <server>/wals/<first 16 hex>/<segment>[.gz|.bz2|.xz|.zst|.lz4]
    <server>/wals/<first 16 hex>/<segment>.<offset>.backup[…]
    <server>/wals/<tli>.history[…]

The source is the destination URL (``?server=NAME`` picks one of several servers) or a server
folder itself.  Everything is read with plain S3 calls: one listing, one GET per ``backup.info``,
then the tars streamed and WAL fetched ahead by the spool — never barman-cloud-wal-restore, which
pays a Python start-up per segment.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import weakref
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import CorruptBackup, ServerError, UnsupportedBarmanBackup
from ..settings._target import parse_lsn
from ..store import ObjectInfo, ObjectStore
from ._base import IncompleteBackup, Materialized, missing_objects
from ._catalog import Backup, Catalog, Unfinished, WalArchive, WalSegment
from ._codecs import open_decompressed
from ._parallel import fetch_workers
from ._tar_materialize import TarObject, extract_tars, link_tablespaces
from ._wal import BACKUP_HISTORY_RE, HISTORY_RE, SEGMENT_RE, parse_history, parse_segment_name

log = logging.getLogger(__name__)

__all__ = ["BarmanFormat", "ServerError", "UnsupportedBarmanBackup", "parse_backup_info"]

_INFO_RE = re.compile(r"^(?:([^/]+)/)?base/([^/]+)/backup\.info\Z")
_TAR_RE = re.compile(r"^(data|\d+)(_\d{4})?\.tar(\.gz|\.bz2|\.lz4|\.zst|\.xz|\.snappy)?\Z")
_DETECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # store → listing, used once
_WAL_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".snappy")


def parse_backup_info(text: str) -> dict[str, str]:
    """barman's ``backup.info``: ``key=value`` lines, values as barman wrote them."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _time(text: str | None) -> datetime | None:
    if not text or text == "None":
        return None
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.astimezone()  # barman: a naive time is the host's local time


class BarmanFormat:
    name = "barman"
    LAYOUT_HINT = "<server>/base/<backup_id>/backup.info and <server>/wals/ (barman-cloud)"
    SELECTOR = "server"

    def __init__(self, store: ObjectStore, *, selector: dict[str, str] | None = None) -> None:
        self.store = store
        self.server: str | None = (selector or {}).get("server")
        self.base: str | None = None  # "<server>/" or "" when the source is the server folder

    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        listing = list(store.list(""))
        if not any(_INFO_RE.match(info.key) for info in listing):
            return False
        _DETECTED[store] = listing  # the catalog that follows detection reuses it: one listing, not two
        return True

    # -- catalog -----------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        listing = self._resolve_server()
        base = self.base
        assert base is not None, "_resolve_server sets it"
        infos = {}
        for info in listing:
            m = _INFO_RE.match(info.key[len(base):]) if info.key.startswith(base) else None
            if m and m.group(1) is None:
                infos[m.group(2)] = info
        objects: dict[str, list[ObjectInfo]] = {}
        for info in listing:
            parts = info.key[len(base):].split("/")
            if len(parts) == 3 and parts[0] == "base":
                objects.setdefault(parts[1], []).append(info)
        with ThreadPoolExecutor(max_workers=fetch_workers(self)) as pool:
            texts = dict(zip(infos, pool.map(lambda i: self._read_small(i.key), infos.values()), strict=True))
        backups = []
        unfinished = [Unfinished(b, "in progress", "tars but no backup.info yet (barman-cloud-backup uploads it last)")
                      for b in sorted(set(objects) - set(infos))]
        for backup_id in sorted(infos):
            fields = parse_backup_info(texts[backup_id])
            status = fields.get("status")
            if status != "DONE":
                log.warning("skipping barman backup %s: status %s", backup_id, status)
                state = "failed" if status == "FAILED" else "in progress"
                unfinished.append(Unfinished(backup_id, state, f"backup.info says status={status}"))
                continue
            backups.append(self._backup(backup_id, fields, objects.get(backup_id, [])))
        wal = self._wal_listing(listing, backups)
        backups.sort(key=lambda b: (b.stop_lsn, b.name))
        return Catalog(source=self._description(), format=self.name, backups=backups, wal=wal,
                       selector=self.server if self.base else None,  # a server folder names itself
                       unfinished=sorted(unfinished, key=lambda u: u.name))

    def check_complete(self, backup: Backup) -> None:
        """What backup.info implies is present: ``data.tar`` and its numbered parts without a gap
        (``data_0001.tar``…), and one ``<oid>.tar`` per tablespace it lists."""
        refusal = backup.details.get("incomplete")
        if refusal is not None:
            raise refusal

    def _completeness(self, backup_id: str, tars: dict[str, str], tablespaces: dict[str, str]) -> IncompleteBackup | None:
        where = f"{self.base}base/{backup_id}/"
        parts: dict[str, set[int]] = {}
        ext: dict[str, str] = {}
        for t in tars:
            m = _TAR_RE.match(t)
            assert m is not None, "tars holds the names _TAR_RE matches"
            parts.setdefault(m.group(1), set()).add(int(m.group(2)[1:]) if m.group(2) else 0)
            ext.setdefault(m.group(1), m.group(3) or "")
        # barman-cloud-backup compresses every tar of a backup alike (one --gzip/--bzip2/… for the
        # run): a tar missing outright is named with the suffix its siblings carry
        suffix = ext.get("data", next(iter(ext.values()), ""))
        missing = []
        for kind in ["data", *sorted(tablespaces)]:
            have = parts.get(kind)
            if not have:
                missing.append(f"{where}{kind}.tar{suffix}")
                continue
            missing += [f"{where}{kind}{f'_{n:04d}' if n else ''}.tar{ext[kind]}"
                        for n in range(max(have) + 1) if n not in have]
        if not missing:
            return None
        return missing_objects(backup_id, missing, index=f"{where}backup.info (its tablespaces; data.tar and its "
                                                         "numbered parts)",
                               looked=f"the listing of {where} ({', '.join(sorted(tars)) or 'no tar'})")

    def _description(self) -> str:
        if not self.base:
            return self.store.description
        url, sep, rest = self.store.description.partition(" (")
        return f"{url}?server={self.server}{sep}{rest}"

    def _resolve_server(self) -> list[ObjectInfo]:
        listing = _DETECTED.pop(self.store, None)
        if listing is None:
            listing = list(self.store.list(""))
        servers = sorted({m.group(1) for i in listing if (m := _INFO_RE.match(i.key)) and m.group(1)})
        here = any((m := _INFO_RE.match(i.key)) and m.group(1) is None for i in listing)
        if here:  # the source is a server folder itself
            folder = self.store.description.split(" ")[0].rstrip("/").rsplit("/", 1)[-1]
            if self.server not in (None, folder):
                raise ServerError(f"?server={self.server} does not match the source, which is the barman "
                                  f"server folder {folder}", checked="base/<id>/backup.info at the source root",
                                  fix="drop ?server= or point at the destination URL above it")
            self.server, self.base = folder, ""
            return listing
        if self.server is None:
            if len(servers) != 1:
                raise ServerError(
                    f"the barman-cloud destination {self.store.description} holds "
                    + (f"{len(servers)} servers: {', '.join(servers)}" if servers else "no server"),
                    checked="<server>/base/<backup_id>/backup.info under the source",
                    fix=f"pick one with ?server=NAME, e.g. ?server={servers[0]}" if servers else
                    "point --restore-source at barman-cloud's destination URL")
            self.server = servers[0]
        elif self.server not in servers:
            raise ServerError(f"server {self.server!r} is not in the barman-cloud destination "
                              f"{self.store.description}",
                              checked=f"<server>/base/*/backup.info: found {', '.join(servers) or 'none'}",
                              fix="fix ?server= (barman-cloud-backup-list shows a server's backups)")
        self.base = f"{self.server}/"
        return [i for i in listing if i.key.startswith(self.base)]

    def _backup(self, backup_id: str, f: dict[str, str], objs: list[ObjectInfo]) -> Backup:
        tars = {o.key.rsplit("/", 1)[1]: o.key for o in objs if _TAR_RE.match(o.key.rsplit("/", 1)[1])}
        self._refuse_unsupported(backup_id, f, tars)
        version = int(f["version"])
        name = f.get("backup_name")
        tablespaces = _tablespaces(f.get("tablespaces"))
        backup = Backup(
            name=backup_id, format=self.name, start_lsn=parse_lsn(f["begin_xlog"]), stop_lsn=parse_lsn(f["end_xlog"]),
            timeline=int(f["timeline"]), start_time=_time(f.get("begin_time")), stop_time=_time(f.get("end_time")),
            pg_major=version // 10000 if version >= 100000 else version // 100,
            segment_size=int(f.get("xlog_segment_size") or 16 << 20),
            system_identifier=int(f["systemid"]) if f.get("systemid", "None") != "None" else None,
            stored_bytes=sum(o.size for o in objs), incremental=False,
            details={"tars": tars, "backup_name": None if name in (None, "None") else name,
                     "tablespaces": tablespaces, "server": self.server,
                     "begin_wal": f.get("begin_wal"), "end_wal": f.get("end_wal")})
        incomplete = self._completeness(backup_id, tars, tablespaces)
        if incomplete is not None:
            backup.details["incomplete"] = backup.details["refusal"] = incomplete
        return backup

    def _refuse_unsupported(self, backup_id: str, f: dict[str, str], tars: dict[str, str]) -> None:
        where = f"barman backup {backup_id} ({self.base}base/{backup_id}/backup.info)"
        if f.get("snapshots_info", "None") != "None":
            raise UnsupportedBarmanBackup(f"{where} is a snapshot backup: its data is in disk snapshots, not in S3",
                                          checked="snapshots_info in backup.info",
                                          fix="restore it with barman-cloud-restore --snapshot-recovery-instance")
        if f.get("parent_backup_id", "None") != "None":
            raise UnsupportedBarmanBackup(f"{where} is an incremental backup (parent {f['parent_backup_id']})",
                                          checked="parent_backup_id in backup.info",
                                          fix="combine the chain with pg_combinebackup, or drill a full backup")
        if f.get("encryption", "None") != "None":
            raise UnsupportedBarmanBackup(f"{where} is encrypted ({f['encryption']})",
                                          checked="encryption in backup.info",
                                          fix="restore it with barman-cloud-restore and its key")
        if snappy := [t for t in tars if t.endswith(".snappy")]:
            raise UnsupportedBarmanBackup(f"{where} is snappy-compressed ({snappy[0]})",
                                          checked="the tar object suffixes",
                                          fix="take the drill's backups with --gzip, --bzip2, --lz4 or no compression")

    def _wal_listing(self, listing: list[ObjectInfo], backups: list[Backup]) -> WalArchive:
        wal = WalArchive()
        wal.segment_size = next((b.segment_size for b in backups), None)
        prefix = f"{self.base}wals/"
        for info in listing:
            if not info.key.startswith(prefix):
                continue
            rel = info.key[len(prefix):]
            name = PurePosixPath(rel).name
            base = name[: -len(s)] if (s := next((x for x in _WAL_SUFFIXES if name.endswith(x)), None)) else name
            if "/" not in rel and HISTORY_RE.match(base):
                wal.history_keys[int(base[:8], 16)] = info.key
            elif SEGMENT_RE.match(base) and wal.segment_size:
                try:
                    seg = parse_segment_name(base, wal.segment_size)
                except ValueError:
                    continue
                wal.segments.setdefault(seg.timeline, {})[seg.segno] = WalSegment(
                    seg.timeline, seg.segno, info.key, info.size, info.last_modified)
            elif BACKUP_HISTORY_RE.match(base):
                wal.backup_files[base] = info.key
        for tli, key in wal.history_keys.items():
            try:
                wal.histories[tli] = parse_history(self._read_small(key))
            except ValueError as exc:
                raise CorruptBackup(f"timeline history {key} is malformed ({exc})",
                                    checked="parsing every .history file in wals/",
                                    fix="restore the file from another copy of the archive") from exc
        return wal

    def _read_small(self, key: str) -> str:
        with self.store.open(key) as raw, open_decompressed(raw, key) as stream:
            return stream.read(1 << 20).decode("utf-8", "replace")

    # -- WAL ---------------------------------------------------------------------------------
    def find_wal(self, name: str) -> str | None:
        if self.base is None and self.server and next(iter(self.store.list(f"{self.server}/wals/")), None):
            self.base = f"{self.server}/"  # a named server: no need to list the whole destination
        elif self.base is None:
            self._resolve_server()
        folder = f"{self.base}wals/" + ("" if HISTORY_RE.match(name) else f"{name[:16]}/")
        for info in self.store.list(folder + name):
            if info.key == folder + name or (info.key.startswith(folder + name + ".")
                                             and info.key[len(folder + name):] in _WAL_SUFFIXES):
                return info.key
        return None

    def open_wal(self, key: str) -> BinaryIO:
        if key.endswith(".snappy"):
            raise UnsupportedBarmanBackup(f"{key} is snappy-compressed", checked="the WAL object suffix",
                                          fix="archive WAL with --gzip, --bzip2, --xz, --zstd or --lz4")
        return open_decompressed(self.store.open(key), key)

    # -- materialize -------------------------------------------------------------------------
    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *, owner=None) -> Materialized:
        self.check_complete(backup)
        tars: dict[str, str] = backup.details["tars"]
        ts_root = run_dir / "tablespaces"
        pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        links = {oid: ts_root / oid for oid in backup.details["tablespaces"]}

        def on_symlink(rel: PurePosixPath, linkname: str) -> None:
            raise CorruptBackup(f"backup {backup.name}: unexpected symlink {rel} -> {linkname}",
                                checked="symlinks in the backup's tars (barman-cloud writes none)",
                                fix="this is not a barman-cloud backup")

        def dest(fname: str) -> Path:
            m = _TAR_RE.match(fname)
            assert m is not None, "the catalog keeps the tars _TAR_RE matches"
            kind = m.group(1)
            return pgdata if kind == "data" else links.setdefault(kind, ts_root / kind)

        # a damaged tar or Ctrl-C: the other downloads stop at their next read
        fetched, written = extract_tars(self.store, [TarObject(tars[f], dest(f)) for f in sorted(tars)],
                                        workers=fetch_workers(self), name="barman-fetch", owner=owner,
                                        on_symlink=on_symlink)
        link_tablespaces(pgdata, links)
        for sub in ("pg_wal", "pg_wal/archive_status"):
            (pgdata / sub).mkdir(mode=0o700, exist_ok=True)
            if owner:
                os.chown(pgdata / sub, *owner)
        return Materialized(pgdata=pgdata, bytes_fetched=fetched, bytes_written=written, manifest=None,
                            tablespaces=links, contents_verified=False,
                            contents_check="barman-cloud records no file list or checksums: only the tars' own "
                                           "integrity (compression checksums, tar structure) was checked")


def _tablespaces(text: str | None) -> dict[str, str]:
    """oid → original location, from barman's Python-literal list of (name, oid, location)."""
    if not text or text == "None":
        return {}
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return {str(item[1]): str(item[2]) for item in items or ()}



