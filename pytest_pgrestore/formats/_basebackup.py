"""The ``basebackup`` format: what ``pg_basebackup -Ft`` writes plus an archive_command's copies.

Layout under the source prefix (see docs/formats/basebackup.md)::

    basebackups/<name>/base.tar[.gz|.lz4|.zst]     main tablespace
    basebackups/<name>/<oid>.tar[...]             other tablespaces
    basebackups/<name>/pg_wal.tar[...]            WAL fetched during the backup (optional)
    basebackups/<name>/backup_manifest           file checksums + WAL range (PostgreSQL 13+)
    wal/<segment>[.gz|.lz4|.zst]                  archived segments
    wal/<tli>.history, wal/<seg>.<offset>.backup  timeline history, backup history files

Everything the catalog says comes from what PostgreSQL itself wrote: the manifest's WAL range
(read from its tail with one ranged GET), the ``.backup`` history file (times, timeline), and
the long header of the backup's first WAL segment (major version, system id, segment size).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..errors import CorruptBackup
from ..settings._target import parse_lsn
from ..store import ObjectInfo, ObjectStore
from ._base import IncompleteBackup, Materialized, missing_objects
from ._catalog import XLOG_PAGE_MAGIC, Backup, Catalog, Unfinished, WalArchive, WalSegment
from ._codecs import open_decompressed, strip_suffix
from ._parallel import fetch_workers
from ._tar_materialize import TarObject, extract_tars, link_tablespaces
from ._wal import BACKUP_HISTORY_RE, HISTORY_RE, SEGMENT_RE, infer_segment_size, parse_history

log = logging.getLogger(__name__)

__all__ = ["BaseBackupFormat", "parse_backup_history", "parse_wal_ranges", "parse_long_header"]

_MAX_LABEL = 64 << 10  # bytes of backup_label read: pg_basebackup's is well under 1 KiB
_TAR_RE = re.compile(r"^(base|pg_wal|\d+)\.tar(\.gz|\.lz4|\.zst)?$")
_TBLSPC_PATH_RE = re.compile(rb'"Path": *"pg_tblspc/(\d+)/')
_LOCATION_RE = re.compile(r"^(START|STOP) WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)")


def parse_backup_history(text: str) -> dict[str, str]:
    """``KEY: value`` lines of a ``.backup`` file or ``backup_label``."""
    out = {}
    for line in text.splitlines():
        m = _LOCATION_RE.match(line)
        if m:
            out[f"{m.group(1)} LSN"] = m.group(2)
            out[f"{m.group(1)} FILE"] = m.group(3)
            continue
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_pg_time(text: str | None) -> datetime | None:
    """``2026-11-26 20:40:00 UTC`` as PostgreSQL writes it; None when the zone is ambiguous."""
    if not text:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: (\S+))?$", text)
    if not m:
        return None
    naive = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    zone = m.group(2) or "UTC"
    if zone in ("UTC", "GMT", "Z"):
        return naive.replace(tzinfo=timezone.utc)
    om = re.match(r"^([+-])(\d\d)(?::?(\d\d))?$", zone)
    if om:
        from datetime import timedelta

        delta = timedelta(hours=int(om.group(2)), minutes=int(om.group(3) or 0))
        return (naive - delta if om.group(1) == "+" else naive + delta).replace(tzinfo=timezone.utc)
    return None  # an abbreviation like CET: the caller falls back to the object's LastModified


def parse_wal_ranges(manifest_tail: str) -> list[dict]:
    """The ``WAL-Ranges`` array of a backup_manifest, from its tail."""
    idx = manifest_tail.rfind('"WAL-Ranges"')
    if idx < 0:
        raise ValueError("no WAL-Ranges in manifest tail")
    start = manifest_tail.index("[", idx)
    end = manifest_tail.index("]", start)
    return json.loads(manifest_tail[start : end + 1])


def parse_long_header(head: bytes) -> dict[str, int]:
    """Fields of a WAL segment's first page header (XLogLongPageHeaderData)."""
    if len(head) < 40:
        raise ValueError("WAL header too short")
    magic, info, tli = struct.unpack_from("<HHI", head, 0)
    sysid, seg_size, blcksz = struct.unpack_from("<QII", head, 24)
    if not info & 0x0002:  # XLP_LONG_HEADER
        raise ValueError("first page of segment has no long header")
    return {"magic": magic, "timeline": tli, "system_identifier": sysid, "segment_size": seg_size,
            "block_size": blcksz, "major": XLOG_PAGE_MAGIC.get(magic, 0)}


class BaseBackupFormat:
    name = "basebackup"
    LAYOUT_HINT = "basebackups/<name>/base.tar[.gz|.lz4|.zst] and wal/"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        return any(True for _ in zip(range(1), store.list("basebackups/"), strict=False))

    # -- catalog ---------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        backup_objs: dict[str, list[ObjectInfo]] = {}
        for info in self.store.list("basebackups/"):
            parts = info.key.split("/")
            if len(parts) == 3:
                backup_objs.setdefault(parts[1], []).append(info)
        wal = self._wal_listing()
        histories = {}
        for key in wal.backup_files.values():
            histories[key] = parse_backup_history(self._read_small(key))
        backups: list[Backup] = []
        unfinished: list[Unfinished] = []
        # a source whose backups carry backup_manifest: one without it is still being written
        # (pg_basebackup writes the manifest last); with none anywhere, --no-manifest is the norm
        manifests = any(o.key.endswith("/backup_manifest") for objs in backup_objs.values() for o in objs)
        for name, objs in sorted(backup_objs.items()):
            backup = self._backup(name, objs, histories, wal, manifests=manifests)
            if isinstance(backup, Unfinished):
                log.info("basebackups/%s is %s: %s", name, backup.state, backup.reason)
                unfinished.append(backup)
            elif backup is not None:
                backups.append(backup)
        self._read_histories(wal)
        for b in backups:  # one probe fills in what the listing cannot know
            self._probe_wal_header(b, wal)
        if wal.segment_size is None:
            wal.segment_size = next((b.segment_size for b in backups if b.segment_size), None)
        self._index_segments(wal)
        backups.sort(key=lambda b: (b.stop_lsn, b.name))
        return Catalog(source=self.store.description, format=self.name, backups=backups, wal=wal,
                       unfinished=unfinished)

    def check_complete(self, backup: Backup) -> None:
        """base.tar is not empty, and every tablespace backup_manifest lists has its ``<oid>.tar``."""
        if backup.details.get("complete"):
            return
        tars: dict[str, str] = backup.details["tars"]
        sizes: dict[str, int] = backup.details.get("sizes", {})
        base = next(f for f in tars if f.startswith("base.tar"))
        if sizes.get(base) == 0:
            raise IncompleteBackup(f"backup {backup.name}: {tars[base]} is empty (0 bytes)",
                                   checked=f"the listing of basebackups/{backup.name}/; its backup_manifest "
                                           "says the backup finished",
                                   fix="the upload of base.tar failed: restore another backup, and take a new one")
        manifest = backup.details.get("manifest")
        if manifest:
            oids: set[str] = set()
            tail = b""
            with self.store.open(manifest) as raw:
                while chunk := raw.read(1 << 20):
                    data = tail + chunk
                    oids.update(m.group(1).decode() for m in _TBLSPC_PATH_RE.finditer(data))
                    tail = data[-256:]
            have = {f.split(".", 1)[0] for f in tars}
            missing = sorted(f"basebackups/{backup.name}/{oid}.tar" for oid in oids if oid not in have)
            if missing:
                raise missing_objects(backup.name, missing, index=f"{manifest} (files under pg_tblspc/<oid>/)",
                                      looked=f"the listing of basebackups/{backup.name}/ ({', '.join(sorted(tars))})")
        backup.details["complete"] = True

    def _wal_listing(self) -> WalArchive:
        wal = WalArchive()
        for info in self.store.list("wal/"):
            base, _codec = strip_suffix(info.key[len("wal/"):])
            if "/" in base:
                continue
            if SEGMENT_RE.match(base):
                wal.raw[base] = info
            elif m := HISTORY_RE.match(base):
                wal.history_keys[int(m.group(1), 16)] = info.key
            elif BACKUP_HISTORY_RE.match(base):
                wal.backup_files[base] = info.key
        return wal

    def _read_histories(self, wal: WalArchive) -> None:
        for tli, key in wal.history_keys.items():
            try:
                wal.histories[tli] = parse_history(self._read_small(key))
            except ValueError as exc:
                raise CorruptBackup(f"timeline history {key} is malformed ({exc})",
                                    checked="parsing every .history file in the archive",
                                    fix="restore the file from another copy of the archive") from exc

    def _index_segments(self, wal: WalArchive) -> None:
        if wal.segment_size is None:
            return
        from ._wal import parse_segment_name

        for base, info in wal.raw.items():
            try:
                seg = parse_segment_name(base, wal.segment_size)
            except ValueError:
                continue
            wal.segments.setdefault(seg.timeline, {})[seg.segno] = WalSegment(
                seg.timeline, seg.segno, info.key, info.size, info.last_modified)

    def _backup(self, name, objs, histories, wal, *, manifests: bool = False) -> Backup | Unfinished | None:
        files = {o.key.rsplit("/", 1)[1]: o for o in objs}
        tars = {f: o for f, o in files.items() if _TAR_RE.match(f)}
        base = next((f for f in tars if f.startswith("base.tar")), None)
        if base is None:
            log.warning("skipping %s: no base.tar", name)
            return None
        if "backup_manifest" not in files:
            if tars[base].size == 0:
                return Unfinished(name, "in progress", f"{base} is empty (0 bytes) and there is no backup_manifest")
            if manifests:
                return Unfinished(name, "in progress", "no backup_manifest yet (pg_basebackup writes it last; "
                                                       "the other backups here have theirs)")
        start_lsn = stop_lsn = None
        tli = 1
        if "backup_manifest" in files:
            tail = self.store.read_tail(files["backup_manifest"].key, 4096).decode("utf-8", "replace")
            try:
                ranges = parse_wal_ranges(tail)
            except ValueError as exc:
                raise CorruptBackup(f"backup {name}: backup_manifest has no readable WAL-Ranges",
                                    checked=f"the tail of {files['backup_manifest'].key}",
                                    fix="the manifest is truncated; restore from another backup") from exc
            start_lsn = min(parse_lsn(r["Start-LSN"]) for r in ranges)
            stop_lsn = max(parse_lsn(r["End-LSN"]) for r in ranges)
            tli = ranges[0]["Timeline"]
        hist = next((h for h in histories.values()
                     if start_lsn is not None and parse_lsn(h.get("START LSN", "0/0")) == start_lsn), None)
        if hist is None and start_lsn is None:
            try:
                hist = self._label_from_tar(name, tars[base], histories)
            except CorruptBackup:
                raise
            except Exception as exc:  # tarfile.ReadError, a codec's error: a tar still being written
                return Unfinished(name, "in progress", f"no backup_manifest, and {base} cannot be read yet "
                                                       f"({type(exc).__name__}: {exc})")
        if hist is not None and start_lsn is None:
            if "START LSN" not in hist or "START FILE" not in hist:  # a label garbled or cut: never a traceback
                return Unfinished(name, "unreadable", f"its backup_label (in {base}) has no START WAL LOCATION line: "
                                                      "where it starts cannot be known")
            start_lsn = parse_lsn(hist["START LSN"])
            stop_lsn = parse_lsn(hist["STOP LSN"]) if "STOP LSN" in hist else None
            tli = int(hist.get("START TIMELINE", "1"))
        if start_lsn is None or stop_lsn is None:
            return Unfinished(name, "in progress", "no backup_manifest and no archived .backup history file: "
                                                   "where it ends is not written yet")
        stop_time = parse_pg_time(hist.get("STOP TIME")) if hist else None
        return Backup(
            name=name, format=self.name, start_lsn=start_lsn, stop_lsn=stop_lsn, timeline=tli,
            start_time=parse_pg_time(hist.get("START TIME")) if hist else None,
            stop_time=stop_time or max(o.last_modified for o in objs),
            segment_size=infer_segment_size(start_lsn, hist["START FILE"]) if hist else None,
            stored_bytes=sum(o.size for o in objs),
            incremental=bool(hist and "INCREMENTAL FROM LSN" in hist),
            details={"tars": {f: o.key for f, o in tars.items()}, "sizes": {f: o.size for f, o in tars.items()},
                     "manifest": files["backup_manifest"].key if "backup_manifest" in files else None,
                     "label": hist.get("LABEL") if hist else None,
                     "stop_time_from": "backup history file" if stop_time else "object LastModified"},
        )

    def _label_from_tar(self, name, info, histories) -> dict | None:
        """No manifest: read backup_label, the first member pg_basebackup writes into base.tar."""
        import tarfile

        with self.store.open(info.key) as raw, open_decompressed(raw, info.key) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for _, member in zip(range(20), tar, strict=False):
                    if member.name.lstrip("./") == "backup_label":
                        file = tar.extractfile(member)
                        if file is None:  # a link or a directory where backup_label should be
                            raise CorruptBackup(f"backup {name}: backup_label in {info.key} is not a regular file",
                                                checked="the first members of base.tar",
                                                fix="the tar is not pg_basebackup's; restore another backup")
                        # LABEL is the user's text, in whatever encoding the server had (a Latin-1
                        # 'é' is legal); only the LSN lines matter here.  Capped: a label is a few lines.
                        label = parse_backup_history(file.read(_MAX_LABEL).decode("utf-8", "replace"))
                        start = label.get("START LSN")
                        return next((h for h in histories.values() if h.get("START LSN") == start), label)
        return None

    def _probe_wal_header(self, backup: Backup, wal: WalArchive) -> None:
        from ._wal import segment_name

        sizes = [backup.segment_size] if backup.segment_size else [1 << n for n in range(20, 31)]
        start_file = next((name for name in (segment_name(backup.timeline, backup.start_lsn // size, size)
                                             for size in sizes) if name in wal.raw), None)
        info = wal.raw.get(start_file) if start_file else None
        if info is None:
            return  # WAL only in pg_wal.tar, or not archived: the version is read from PG_VERSION later
        with self.store.open(info.key) as raw, open_decompressed(raw, info.key) as stream:
            head = stream.read(40)
        try:
            hdr = parse_long_header(head)
        except ValueError as exc:
            raise CorruptBackup(f"WAL segment {info.key} does not start with a valid page header",
                                checked="the long page header of the backup's first WAL segment",
                                fix="the segment is corrupt; re-archive it or use another backup") from exc
        backup.pg_major = hdr["major"] or None
        backup.system_identifier = hdr["system_identifier"]
        backup.segment_size = backup.segment_size or hdr["segment_size"]
        wal.segment_size = wal.segment_size or hdr["segment_size"]

    def _read_small(self, key: str) -> str:
        with self.store.open(key) as raw, open_decompressed(raw, key) as stream:
            return stream.read(1 << 20).decode("utf-8", "replace")

    # -- materialize -----------------------------------------------------------------------
    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *, owner=None) -> Materialized:
        self.check_complete(backup)
        tars: dict[str, str] = backup.details["tars"]
        pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        ts_root = run_dir / "tablespaces"
        links: dict[str, Path] = {}

        def on_symlink(rel: PurePosixPath, linkname: str) -> None:
            if len(rel.parts) == 2 and rel.parts[0] == "pg_tblspc" and rel.parts[1].isdigit():
                links[rel.parts[1]] = ts_root / rel.parts[1]
                return
            raise CorruptBackup(f"backup {backup.name}: unexpected symlink {rel} -> {linkname}",
                                checked="symlinks in base.tar (only pg_tblspc/<oid> is expected)",
                                fix="this is not a pg_basebackup archive")

        def dest(fname: str) -> Path:
            kind = fname.split(".", 1)[0]
            return pgdata if kind == "base" else pgdata / "pg_wal" if kind == "pg_wal" else ts_root / kind

        order = sorted(tars, key=lambda f: (not f.startswith("base."), f))
        fetched, written = extract_tars(self.store, [TarObject(tars[f], dest(f)) for f in order],
                                        workers=fetch_workers(self), name="basebackup-fetch", owner=owner,
                                        on_symlink=on_symlink)
        for fname in tars:  # pg_basebackup -Ft sends tablespace_map, not symlinks: link every <oid>.tar
            kind = fname.split(".", 1)[0]
            if kind.isdigit():
                links.setdefault(kind, ts_root / kind)
        link_tablespaces(pgdata, links)
        manifest = None
        if backup.details.get("manifest"):
            manifest = run_dir / "backup_manifest"
            with self.store.open(backup.details["manifest"]) as raw, open(manifest, "wb") as out:
                while chunk := raw.read(1 << 20):
                    out.write(chunk)
        (pgdata / "pg_wal").mkdir(mode=0o700, exist_ok=True)
        check = ("pg_verifybackup against backup_manifest (every file's size and checksum)" if manifest else
                 "the backup has no backup_manifest (pg_basebackup --no-manifest?): nothing lists its files or "
                 "their checksums")
        return Materialized(pgdata=pgdata, bytes_fetched=fetched, bytes_written=written, manifest=manifest,
                            tablespaces=links, contents_verified=manifest is not None, contents_check=check)

    def find_wal(self, name: str) -> str | None:
        """A fresh lookup of one WAL file (any compression suffix); None when absent."""
        for info in self.store.list(f"wal/{name}"):
            if strip_suffix(info.key[len("wal/"):])[0] == name:
                return info.key
        return None

    def open_wal(self, key: str) -> BinaryIO:
        return open_decompressed(self.store.open(key), key)


