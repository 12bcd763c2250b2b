"""Test support: write real PostgreSQL backups and WAL in WAL-G's storage layout (no wal-g binary).

Input is what ``pytest_pgrestore.demo._source.SourceCluster`` makes: ``pg_basebackup -Ft`` output
(uncompressed ``base.tar``, ``<oid>.tar`` per tablespace, ``backup_manifest``) and an archive of
plain WAL files.  Output follows WAL-G's layout as read from its source (see
``shared/reference/walg-and-friends-layout.md`` §1–3): tar members named ``/<path>`` with a root
member ``/``, excluded directories as bare headers, ``pg_control`` and ``backup_label`` tars,
``metadata.json``, ``files_metadata.json``, the sentinel written last, ``wal_005/<name>.<ext>``;
compress then (optionally) libsodium-encrypt.  Deltas are ``wi1`` page increments of the pages
whose LSN is at or past the parent's start LSN, as ``IncrementalPageReader`` selects them.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import re
import struct
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

EXT = {"lz4": ".lz4", "zstd": ".zst", "brotli": ".br", "lzma": ".lzma", "gzip": ".gz", "none": ""}
EXCLUDED_DIRS = {"log", "pg_log", "pg_xlog", "pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial",
                 "pg_stat_tmp", "pg_snapshots", "pg_subtrans", "pgsql_tmp"}
EXCLUDED_FILES = {"postgresql.auto.conf.tmp", "postmaster.pid", "postmaster.opts", "recovery.conf", "standby.signal"}
UTILITY = ("backup_label", "tablespace_map", "global/pg_control")
BLCKSZ = 8192
_PAGED = re.compile(r"^\d+(\.\d+)?$")


def compress(data: bytes, method: str, *, lz4_checksum: bool = True, lzma_known_size: bool = False) -> bytes:
    if method == "lz4":
        import lz4.frame

        return lz4.frame.compress(data, content_checksum=lz4_checksum)
    if method == "zstd":
        import zstandard

        cobj = zstandard.ZstdCompressor(write_checksum=True).compressobj()  # streamed: no content size
        return cobj.compress(data) + cobj.flush()
    if method == "brotli":
        import brotli

        return brotli.compress(data, quality=3)
    if method == "lzma":
        out = bytearray(lzma.compress(data, format=lzma.FORMAT_ALONE, preset=0))  # size unknown, end marker
        if lzma_known_size:
            out[5:13] = struct.pack("<Q", len(data))
        return bytes(out)
    if method == "gzip":
        return gzip.compress(data, compresslevel=1)
    if method == "none":
        return data
    raise ValueError(method)


def encrypt(data: bytes, key: bytes) -> bytes:
    """libsodium secretstream as WAL-G's writer: 8192-byte chunks, the last tagged FINAL."""
    from nacl import bindings as b

    state = b.crypto_secretstream_xchacha20poly1305_state()
    header = b.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    out = [header]
    chunks = [data[i:i + 8192] for i in range(0, len(data), 8192)]
    if not chunks or len(chunks[-1]) == 8192:
        chunks.append(b"")
    for i, chunk in enumerate(chunks):
        tag = b.crypto_secretstream_xchacha20poly1305_TAG_FINAL if i == len(chunks) - 1 else 0
        out.append(b.crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag))
    return b"".join(out)


def segment_name(tli: int, lsn: int, segsize: int = 16 << 20) -> str:
    segno, per = lsn // segsize, 0x100000000 // segsize
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def parse_lsn(text: str) -> int:
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


def rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Entry:
    info: tarfile.TarInfo
    data: bytes = b""


@dataclass
class Pushed:
    name: str
    start_lsn: int
    stop_lsn: int
    files: dict[str, bytes]  # relpath -> content as a restore of this backup reconstructs it
    full_name: str
    count: int = 0
    sentinel: dict = field(default_factory=dict)


def is_paged(path: str, size: int) -> bool:
    if any(d in path for d in ("pg_xact", "pg_clog", "pg_multixact")):
        return False
    return ("base" in path or "pg_tblspc" in path) and size > 0 and size % BLCKSZ == 0 and \
        bool(_PAGED.match(path.rsplit("/", 1)[-1]))


def page_lsn(page: bytes) -> int:
    hi, lo = struct.unpack_from("<II", page, 0)
    return hi << 32 | lo


def increment(new: bytes, delta_lsn: int) -> tuple[bytes, list[int]]:
    blocks = []
    for n in range(len(new) // BLCKSZ):
        page = new[n * BLCKSZ:(n + 1) * BLCKSZ]
        if page[:24] == bytes(24) or page_lsn(page) >= delta_lsn:  # new (zeroed) page, or changed since
            blocks.append(n)
    body = b"wi1\x55" + struct.pack("<QI", len(new), len(blocks)) + struct.pack(f"<{len(blocks)}I", *blocks)
    return body + b"".join(new[n * BLCKSZ:(n + 1) * BLCKSZ] for n in blocks), blocks


def apply(old: bytes, new: bytes, blocks: list[int]) -> bytes:
    out = bytearray(old[:len(new)].ljust(len(new), b"\0"))
    for n in blocks:
        out[n * BLCKSZ:(n + 1) * BLCKSZ] = new[n * BLCKSZ:(n + 1) * BLCKSZ]
    return bytes(out)


@dataclass
class WalgWriter:
    """Writes WAL-G objects under ``root`` (the folder a ``WALG_FILE_PREFIX`` or S3 prefix maps to)."""

    root: Path
    method: str = "lz4"
    key: bytes | None = None
    lz4_checksum: bool = True
    lzma_known_size: bool = False
    part_size: int = 1 << 30
    trailing_zeros: int = 0  # extra zero bytes after each tar's end (WAL-G reads and checks them)
    copy_names: bool = False  # name parts copy_N.tar.<ext> (the copy composer)
    legacy_sentinel: bool = False  # old WAL-G: lowercase spec, Files in the sentinel, no files_metadata.json
    pg_version_num: int = 150000

    # -- objects ----------------------------------------------------------------------------
    def encode(self, data: bytes) -> bytes:
        out = compress(data, self.method, lz4_checksum=self.lz4_checksum, lzma_known_size=self.lzma_known_size)
        return encrypt(out, self.key) if self.key else out

    def put(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def tar_ext(self) -> str:
        return ".tar" + EXT[self.method]

    # -- WAL -------------------------------------------------------------------------------
    def push_wal(self, wal_dir: Path, *, names: list[str] | None = None) -> list[str]:
        done = []
        for f in sorted(wal_dir.iterdir()):
            if not f.is_file() or f.name.startswith(".") or (names is not None and f.name not in names):
                continue
            self.put(f"wal_005/{f.name}{EXT[self.method]}", self.encode(f.read_bytes()))
            done.append(f.name)
        return done

    # -- backups -----------------------------------------------------------------------------
    def push_backup(self, backup_dir: Path, *, history: dict[str, str], parent: Pushed | None = None,
                    hostname: str = "db1", data_dir: str = "/var/lib/postgresql/data",
                    user_data: object = None, permanent: bool = False) -> Pushed:
        entries, spec, tsmap = read_pg_basebackup(backup_dir)
        ranges = json.loads((backup_dir / "backup_manifest").read_text())["WAL-Ranges"]
        start, stop = parse_lsn(ranges[0]["Start-LSN"]), parse_lsn(ranges[-1]["End-LSN"])
        tli = int(ranges[0]["Timeline"])
        name = "base_" + segment_name(tli, start)
        if parent is not None:
            name += "_D_" + parent.name[5:29]
        files: dict[str, bytes] = {}
        meta: dict[str, dict] = {}
        body: list[Entry] = []
        mtime = rfc3339(datetime.now(timezone.utc))
        for path, e in entries.items():
            if path in UTILITY:
                continue
            flags = {"IsIncremented": False, "IsSkipped": False, "MTime": mtime}
            if e.info.isreg():
                files[path] = e.data
                old = parent.files.get(path) if parent else None
                if old is not None and old == e.data:
                    flags["IsSkipped"] = True
                elif old is not None and is_paged(path, len(e.data)):
                    inc, blocks = increment(e.data, parent.start_lsn)
                    files[path] = apply(old, e.data, blocks)
                    flags["IsIncremented"] = True
                    e = Entry(_file_info("/" + path, len(inc)), inc)
            meta["/" + path if path else "/"] = flags
            if not flags["IsSkipped"]:
                body.append(e if e.info.name.startswith("/") else Entry(_renamed(e.info, "/" + path), e.data))
        tar_sets, packed, uploaded = self._write_parts(name, body)
        label = [Entry(_file_info("backup_label", len(entries["backup_label"].data)), entries["backup_label"].data),
                 Entry(_file_info("tablespace_map", len(tsmap)), tsmap)]
        control = entries["global/pg_control"].data
        tar_sets[f"backup_label{self.tar_ext()}"] = ["backup_label", "tablespace_map"]
        uploaded += self.put(f"basebackups_005/{name}/tar_partitions/pg_control{self.tar_ext()}",
                             self.encode(_tar([Entry(_file_info("/global/pg_control", len(control)), control)]))
                             ).stat().st_size
        tar_sets[f"pg_control{self.tar_ext()}"] = ["/global/pg_control"]
        uploaded += self.put(f"basebackups_005/{name}/tar_partitions/backup_label{self.tar_ext()}",
                             self.encode(_tar(label))).stat().st_size
        packed += len(control) + sum(e.info.size for e in label)
        sizes = {"UncompressedSize": packed, "CompressedSize": uploaded,
                 "DataCatalogSize": data_catalog_size(entries)}
        sysid = struct.unpack_from("<Q", control, 0)[0]
        times = {k: _pg_time(history[k]) for k in ("START TIME", "STOP TIME")}
        pushed = Pushed(name, start, stop, {**files, **{u: entries[u].data for u in UTILITY if u in entries}},
                        parent.full_name if parent else name, (parent.count + 1) if parent else 0)
        sentinel = self._sentinel(pushed, parent, spec, sysid, times, hostname, data_dir, user_data, permanent,
                                  sizes)
        if self.legacy_sentinel:
            sentinel = {"LSN": start, **({"DeltaFromLSN": parent.start_lsn, "DeltaFrom": parent.name,
                                         "DeltaFullName": pushed.full_name, "DeltaCount": pushed.count}
                                        if parent else {}),
                        "Files": meta, "TarFileSets": tar_sets, "PgVersion": self.pg_version_num,
                        "FinishLSN": stop, "spec": spec or None, "UserData": user_data}
        else:
            self.put(f"basebackups_005/{name}/metadata.json", json.dumps(self._metadata(pushed, sysid, times, hostname,
                                                                                          data_dir, user_data,
                                                                                          permanent, sizes)).encode())
            self.put(f"basebackups_005/{name}/files_metadata.json",
                     json.dumps({"Files": meta, "TarFileSets": tar_sets, "DatabasesByNames": {}}).encode())
        pushed.sentinel = sentinel
        self.put(f"basebackups_005/{name}_backup_stop_sentinel.json", json.dumps(sentinel).encode())
        return pushed

    def _write_parts(self, name: str, body: list[Entry]) -> tuple[dict[str, list[str]], int, int]:
        """The part tars; returns (TarFileSets, the UncompressedSize they add, their stored bytes).

        WAL-G counts into ``UncompressedSize`` each regular file's tar header ``Size`` as it packs
        it (internal/tar_ball.go ``PackFileTo``: ``tarBall.AddSize(fileInfoHeader.Size)``; the
        queue adds each tarball's total when it closes it, internal/tar_ball_queue.go
        ``CloseTarball``: ``AllTarballsSize.Add(tarBall.Size())``): payload bytes, no tar headers
        or padding, and for an incremented file the increment's size, not the file's
        (internal/databases/postgres/tar_ball_file_packer.go sets ``cfi.Header.Size`` from
        ``ReadIncrementalFile``).  The copy composer's ``copy_N`` tars are copied whole with
        ``CopyObject`` (internal/databases/postgres/copy_tar_ball_composer.go ``copyTar``) and
        add nothing.  ``CompressedSize`` is the uploader's byte count
        (``Uploader.UploadedDataSize``): the stored tar objects."""
        sets: dict[str, list[str]] = {}
        packed = uploaded = 0
        parts: list[list[Entry]] = [[]]
        size = 0
        for e in body:
            if size and size + e.info.size > self.part_size:
                parts.append([])
                size = 0
            parts[-1].append(e)
            size += e.info.size
        for i, part in enumerate(parts, start=1):
            fname = f"{'copy' if self.copy_names else 'part'}_{i:03d}{self.tar_ext()}"
            uploaded += self.put(f"basebackups_005/{name}/tar_partitions/{fname}",
                                 self.encode(_tar(part, self.trailing_zeros))).stat().st_size
            sets[fname] = [e.info.name for e in part]
            if not self.copy_names:
                packed += sum(e.info.size for e in part if e.info.isreg())
        return sets, packed, uploaded

    def _metadata(self, p: Pushed, sysid, times, hostname, data_dir, user_data, permanent, sizes) -> dict:
        meta = {"start_time": rfc3339(times["START TIME"]), "finish_time": rfc3339(times["STOP TIME"]),
                "date_fmt": "%Y-%m-%dT%H:%M:%S.%fZ", "hostname": hostname, "data_dir": data_dir,
                "pg_version": self.pg_version_num, "start_lsn": p.start_lsn, "finish_lsn": p.stop_lsn,
                "is_permanent": permanent, "system_identifier": sysid,
                # the sentinel's figures (internal/databases/postgres/backup_sentinel_dto.go
                # NewExtendedMetadataDto: meta.UncompressedSize = sentinelDto.UncompressedSize)
                "uncompressed_size": sizes["UncompressedSize"], "compressed_size": sizes["CompressedSize"]}
        if user_data is not None:
            meta["user_data"] = user_data
        return meta

    def _sentinel(self, p: Pushed, parent, spec, sysid, times, hostname, data_dir, user_data, permanent,
                  sizes) -> dict:
        s: dict = {"LSN": p.start_lsn}
        if parent:
            s.update(DeltaLSN=parent.start_lsn, DeltaFrom=parent.name, DeltaFullName=p.full_name, DeltaCount=p.count)
        # internal/databases/postgres/backup_sentinel_dto.go NewBackupSentinelDto, from
        # backup_push_handler.go: UncompressedSize = bundle.TarBallQueue.AllTarballsSize (see
        # _write_parts; pg_control.tar and backup_label.tar count too: bundle.go UploadPgControl
        # AddSize, uploadLabelFiles PackFileTo, both closed through CloseTarball before it is read),
        # CompressedSize = Uploader.UploadedDataSize(), DataCatalogSize = bundle.DataCatalogSize.
        s.update(PgVersion=self.pg_version_num, FinishLSN=p.stop_lsn, SystemIdentifier=sysid, **sizes)
        if spec:
            s["Spec"] = spec
        if user_data is not None:
            s["UserData"] = user_data
        s.update(ChkpNum=None, Version=2, StartTime=rfc3339(times["START TIME"]),
                 FinishTime=rfc3339(times["STOP TIME"]), DateFmt="%Y-%m-%dT%H:%M:%S.%fZ", Hostname=hostname,
                 DataDir=data_dir, IsPermanent=permanent)
        return s


def data_catalog_size(entries: dict[str, Entry]) -> int:
    """WAL-G's ``DataCatalogSize``: ``os.FileInfo.Size()`` of every object its walk of PGDATA (and
    each tablespace) visits, before any exclusion (internal/databases/postgres/bundle.go
    ``HandleWalkedFSObject``: ``bundle.DataCatalogSize.Add(info.Size())``): the files at their full
    size, even a delta's unchanged or incremented ones; a directory at its st_size (4096 here).
    backup_label and tablespace_map are no files of PGDATA during a non-exclusive backup; the
    files we dropped as excluded are not known here and are left out."""
    total = 0
    for path, e in entries.items():
        if path in ("backup_label", "tablespace_map"):
            continue
        total += len(e.data) if e.info.isreg() else 4096 if e.info.isdir() else 0
    return total


def _pg_time(text: str) -> datetime:
    return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)


def _file_info(name: str, size: int, mode: int = 0o600) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(datetime.now().timestamp())
    return info


def _renamed(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    new = tarfile.TarInfo(name)
    new.type, new.size, new.mode, new.mtime = info.type, info.size, info.mode, info.mtime
    return new


def _tar(entries: list[Entry], trailing_zeros: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            tar.addfile(e.info, io.BytesIO(e.data) if e.info.isreg() else None)
    return buf.getvalue() + bytes(trailing_zeros)


def read_pg_basebackup(backup_dir: Path) -> tuple[dict[str, Entry], dict, bytes]:
    """Members of base.tar (+ tablespace tars under pg_tblspc/<oid>/) in WAL-G's view: relpath -> Entry."""
    entries: dict[str, Entry] = {"": Entry(_dir_info("/"))}
    links: dict[str, str] = {}
    with tarfile.open(backup_dir / "base.tar") as tar:
        for m in tar:
            path = m.name.lstrip("./").rstrip("/")
            parts = path.split("/")
            if m.issym():
                if parts[0] == "pg_tblspc":
                    links[parts[1]] = m.linkname
                continue
            if path == "tablespace_map":  # pg_basebackup -Ft: "<oid> <location>" lines, no symlinks
                for line in tar.extractfile(m).read().decode().splitlines():
                    oid, _, loc = line.partition(" ")
                    links[oid] = loc
                continue
            if parts[-1] in EXCLUDED_FILES or any(p in EXCLUDED_DIRS for p in parts[:-1]):
                continue  # excluded: a directory keeps its bare header, its contents go
            entries[path] = Entry(m, tar.extractfile(m).read() if m.isreg() else b"")
    spec: dict = {}
    for oid, loc in sorted(links.items()):
        spec.setdefault("tablespaces", []).append(oid)
        spec[oid] = {"loc": loc, "link": f"pg_tblspc/{oid}"}
        entries[f"pg_tblspc/{oid}"] = Entry(_dir_info(f"/pg_tblspc/{oid}"))
        with tarfile.open(backup_dir / f"{oid}.tar") as tar:
            for m in tar:
                path = f"pg_tblspc/{oid}/" + m.name.lstrip("./").rstrip("/")
                entries[path] = Entry(m, tar.extractfile(m).read() if m.isreg() else b"")
    if spec:
        spec["base_prefix"] = "/var/lib/postgresql/data"
    tsmap = "".join(f"{oid} {loc}\n" for oid, loc in sorted(links.items())).encode()
    return entries, spec, tsmap


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o700
    return info


def history_fields(path: Path) -> dict[str, str]:
    """``KEY: value`` lines of a plain ``.backup`` history file."""
    return dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)


def set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when))


# -- a real source for the tests -----------------------------------------------------------------
@dataclass
class WalgSource:
    """One real PostgreSQL 15 history, kept in the basebackup layout; ``layout()`` rewrites it as WAL-G.

    Commits ``c0`` → backup ``b1`` → ``c1`` → ``b2`` → ``c2`` → ``b3`` → ``c3`` → WAL switch.  Table
    ``t`` gets one row per commit; table ``big`` (5000 rows, tablespace ``ts1``) is written once,
    before ``b1``, and never again.
    """

    root: Path
    repo: Path  # basebackup layout: basebackups/<name>/base.tar, wal/<plain files>
    backups: list  # demo.source.BackupInfo of b1, b2, b3
    commits: dict[str, list]
    big_file: str  # relation file of ``big`` relative to PGDATA, e.g. pg_tblspc/16384/PG_15_…/5/16385

    def rows_at(self, name: str, index: int) -> int:
        total = 0
        for key in ("c0", "c1", "c2", "c3"):
            if key == name:
                return total + index + 1
            total += len(self.commits[key])
        raise KeyError(name)

    @property
    def total_rows(self) -> int:
        return sum(len(v) for v in self.commits.values())

    def layout(self, out: Path, *, deltas: bool = False, backups: tuple[int, ...] = (0, 1, 2),
               **writer) -> tuple[WalgWriter, list[Pushed]]:
        """Write WAL and the chosen backups (indexes into ``backups``) under ``out``; a chain if ``deltas``."""
        w = WalgWriter(out, **writer)
        w.push_wal(self.repo / "wal")
        pushed: list[Pushed] = []
        for i in backups:
            b = self.backups[i]
            parent = pushed[-1] if deltas and pushed else None
            pushed.append(w.push_backup(b.path, history=history_fields(b.history_file), parent=parent))
        return w, pushed


def build_source(root: Path) -> WalgSource:
    import pwd

    from pytest_pgrestore.demo._source import SourceCluster

    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    ts = root / "ts1"
    ts.mkdir()
    pw = pwd.getpwnam("postgres")
    os.chown(ts, pw.pw_uid, pw.pw_gid)
    commits: dict[str, list] = {}
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with src.connect() as conn:
            conn.execute(f"CREATE TABLESPACE ts1 LOCATION '{ts}'")
            conn.execute("CREATE TABLE big WITH (autovacuum_enabled = off) TABLESPACE ts1 AS "
                         "SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 5000) g")
            conn.execute("CHECKPOINT")
            big = conn.execute("SELECT pg_relation_filepath('big')").fetchone()[0]
        commits["c0"] = src.commit_rows(2)
        b1 = src.backup()
        commits["c1"] = src.commit_rows(2)
        b2 = src.backup()
        commits["c2"] = src.commit_rows(2)
        b3 = src.backup()
        commits["c3"] = src.commit_rows(3)
        src.switch_wal()
    return WalgSource(root, root / "repo", [b1, b2, b3], commits, big)
