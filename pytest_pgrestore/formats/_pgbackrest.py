"""The ``pgbackrest`` format: a pgBackRest repository (posix or S3), read natively.

The source points at the repository root (``repo1-path``: the folder holding ``archive/`` and
``backup/``), optionally with ``?stanza=NAME``; or straight at ``backup/<stanza>`` or
``archive/<stanza>``.  See docs/formats/pgbackrest.md.

* catalog: ``backup.info`` (labels, LSNs, times, references), ``archive.info`` (archive ids) and
  one listing of ``archive/<stanza>/``; no backup folder is ever listed.
* materialize: the backup's ``backup.manifest`` names every file, the backup that stores it
  (full/diff/incr references) and its SHA-1; each file is fetched, decompressed, checked
  against that SHA-1 and written, ``global/pg_control`` last.
* WAL: archived segments carry the SHA-1 of their content in their name; it is checked on
  delivery, so a damaged segment aborts replay instead of being replayed.

Refused at catalog time, by name: repository encryption and block incremental backups.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import weakref
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, cast

from ..errors import CorruptBackup, StanzaError, UnsupportedRepository
from ..settings._target import parse_lsn
from ..store import ObjectInfo, ObjectStore
from ._base import Materialized, missing_objects
from ._catalog import XLOG_PAGE_MAGIC, Backup, Catalog, WalArchive, WalSegment
from ._parallel import Counting, fetch_workers, run_jobs
from ._pgbackrest_info import (
    COMPRESS_EXT,
    SEGMENT_KEY_RE,
    IniFile,
    Manifest,
    ManifestFile,
    parse_archive_info,
    parse_backup_info,
    parse_ini,
    parse_manifest,
)
from ._pgbackrest_io import WHOLE_CODECS, decode_whole, open_codec
from ._wal import HISTORY_RE, infer_segment_size, parse_history, parse_segment_name

log = logging.getLogger(__name__)

__all__ = ["PgBackRestFormat", "UnsupportedRepository", "StanzaError"]

_DETECTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # store → archive/ listing, used once
_BACKUP_FILE_RE = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup\Z")
_STREAM_CHUNK = 1 << 20
_WHOLE = 4 << 20  # files up to this size are read in one piece and decoded in one call


class PgBackRestFormat:
    name = "pgbackrest"
    LAYOUT_HINT = "archive/<stanza>/archive.info and backup/<stanza>/backup.info (a pgBackRest repository)"
    SELECTOR = "stanza"

    def __init__(self, store: ObjectStore, *, selector: dict[str, str] | None = None) -> None:
        self.store = store
        self.stanza: str | None = (selector or {}).get("stanza")
        self._archive_ids: list[str] = []
        self._raw_segments: dict = {}
        self._resolved = False

    # -- detection ---------------------------------------------------------------------------
    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        if store.stat("backup.info") is not None or store.stat("archive.info") is not None:
            return True  # pointed at backup/<stanza> or archive/<stanza>
        listing = list(store.list("archive/"))
        if not _stanzas(listing):
            return False
        _DETECTED[store] = listing  # the catalog that follows detection reuses it: one listing, not two
        return True

    # -- catalog -----------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        listing = self._resolve_stanza(listing=True)
        assert listing is not None, "asked for with listing=True"
        s = self.stanza
        backup_ini = self._read_info(f"backup/{s}/backup.info")
        archive_ini = self._read_info(f"archive/{s}/archive.info")
        entries, history = parse_backup_info(backup_ini)
        self._archive_ids = parse_archive_info(archive_ini)
        if "cipher" in backup_ini.sections or "cipher" in archive_ini.sections:
            raise UnsupportedRepository.encrypted(f"backup/{s}/backup.info")
        blocked = [e.label for e in entries if e.block_incremental]
        if blocked:
            raise UnsupportedRepository.block_incremental(blocked)
        wal = self._wal_listing(listing)
        backups = [self._backup(e, history) for e in entries]
        self._segment_size(wal, backups)
        self._read_histories(wal)
        backups.sort(key=lambda b: (b.stop_lsn, b.name))
        return Catalog(source=self._description(), format=self.name, backups=backups, wal=wal, selector=s)

    def _description(self) -> str:
        url, sep, rest = self.store.description.partition(" (")
        return f"{url}?stanza={self.stanza}{sep}{rest}"

    def _resolve_stanza(self, *, listing: bool = False) -> list[ObjectInfo] | None:
        """Pick the stanza; with ``listing``, also return the listing of ``archive/<stanza>/``."""
        cached = _DETECTED.pop(self.store, None)
        if self._resolved and not listing:
            return None
        for info_name, folder in (("backup.info", "backup"), ("archive.info", "archive")):
            if self.store.stat(info_name) is not None:  # the source is <repo>/<folder>/<stanza>
                self.store, stanza = self.store.parent(2)
                if self.stanza not in (None, stanza):
                    raise StanzaError(f"?stanza={self.stanza} does not match the source folder "
                                      f"{folder}/{stanza}", checked=f"{info_name} at the root of the source",
                                      fix="drop ?stanza= or point at the repository root")
                self.stanza = stanza
                break
        if self.stanza is None:
            everything = cached if cached is not None else list(self.store.list("archive/"))
            found = _stanzas(everything)
            if len(found) != 1:
                raise self._stanza_error(found)
            self.stanza = found[0]
            mine = [i for i in everything if i.key.startswith(f"archive/{self.stanza}/")]
        elif not listing:
            mine = None  # find_wal on a named stanza: nothing to list
        else:
            mine = [i for i in cached if i.key.startswith(f"archive/{self.stanza}/")] if cached is not None \
                else list(self.store.list(f"archive/{self.stanza}/"))
            if not mine and self.store.stat(f"backup/{self.stanza}/backup.info") is None:
                raise self._stanza_error(_stanzas(list(self.store.list("archive/"))))
        self._resolved = True
        return mine

    def _stanza_error(self, found: list[str]) -> StanzaError:
        where = self.store.description
        if self.stanza is not None:
            return StanzaError(f"stanza {self.stanza!r} is not in the pgBackRest repository at {where}",
                               checked=f"archive/<stanza>/archive.info: found {', '.join(found) or 'none'}",
                               fix="fix ?stanza= (pgbackrest info lists the stanzas)")
        return StanzaError(
            f"the pgBackRest repository at {where} holds "
            + (f"{len(found)} stanzas: {', '.join(found)}" if found else "no stanza"),
            checked="archive/<stanza>/archive.info under the source",
            fix=f"pick one with ?stanza=NAME, e.g. {where.split(' ')[0]}?stanza={found[0]}" if found else
            "point --restore-source at the repository root (repo1-path), the folder holding archive/ and backup/")

    def _read_info(self, key: str) -> IniFile:
        """An info file, or its ``.copy`` when the file is missing or fails its checksum."""
        problems = []
        for candidate in (key, key + ".copy"):
            info = self.store.stat(candidate)
            if info is None:
                problems.append(f"{candidate}: missing")
                continue
            with self.store.open(candidate) as f:
                data = f.read()
            ini = parse_ini(data, candidate)
            if ini.checksum_ok:
                return ini
            problems.append(f"{candidate}: checksum mismatch")
        raise CorruptBackup(f"no readable {key.rsplit('/', 1)[1]} for stanza {self.stanza}",
                            checked="; ".join(problems),
                            fix="run `pgbackrest check`/`pgbackrest info` on the repository host to repair it")

    def _backup(self, e, history) -> Backup:
        db = history.get(e.db_id, {})
        version = str(db.get("db-version", ""))
        start, stop = parse_lsn(e.lsn_start), parse_lsn(e.lsn_stop)
        return Backup(
            name=e.label, format=self.name, start_lsn=start, stop_lsn=stop, timeline=int(e.archive_start[:8], 16),
            # whole seconds, taken after pg_backup_stop: round up so a time target is never placed
            # before the backup's real end
            start_time=e.started, stop_time=e.stopped + timedelta(seconds=1), pg_major=int(version.split(".")[0]) if version else None,
            segment_size=infer_segment_size(start, e.archive_start), system_identifier=db.get("db-system-id"),
            stored_bytes=e.repo_size, size=e.size, incremental=False,
            details={"type": e.type, "prior": e.prior, "references": e.references, "db_id": e.db_id,
                     "archive_start": e.archive_start, "archive_stop": e.archive_stop, "error": e.error,
                     "stanza": self.stanza,
                     "manifest": f"backup/{self.stanza}/{e.label}/backup.manifest"})

    def check_complete(self, backup: Backup) -> None:
        """Every repository object backup.manifest names (its own files and bundles, and those of
        the backups it references) is in a listing of those backups' folders."""
        if backup.details.get("complete"):
            return
        manifest = self._manifest(backup)
        needed = {self._repo_key(backup, manifest, f) for f in manifest.files if f.size}
        folders = sorted({k.split("/")[2] for k in needed})
        present: set[str] = set()
        for label in folders:
            present.update(i.key for i in self.store.list(f"backup/{self.stanza}/{label}/"))
        # a key the listing did not show (a posix repo's tablespace folder is reached through a
        # link the listing does not follow) is looked up by name before it is called missing
        missing = sorted(k for k in needed - present if self.store.stat(k) is None)
        if missing:
            raise missing_objects(backup.name, missing, index=backup.details["manifest"],
                                  looked="a listing of " + ", ".join(f"backup/{self.stanza}/{lb}/" for lb in folders))
        backup.details["complete"] = True

    # -- WAL ---------------------------------------------------------------------------------
    def _wal_listing(self, listing: list[ObjectInfo]) -> WalArchive:
        wal = WalArchive()
        self._raw_segments = {}
        order = {aid: i for i, aid in enumerate(self._archive_ids)}
        base = f"archive/{self.stanza}/"
        for info in listing:
            parts = info.key[len(base):].split("/")
            if len(parts) < 2 or parts[0] not in order:
                continue
            if len(parts) == 2 and HISTORY_RE.match(parts[1]):
                wal.history_keys[int(parts[1][:8], 16)] = info.key
            elif len(parts) == 3 and (m := SEGMENT_KEY_RE.match(parts[2])):
                prev = self._raw_segments.get(m.group(1))
                if prev is None or order[parts[0]] >= order[prev.key[len(base):].split("/")[0]]:
                    self._raw_segments[m.group(1)] = info
            elif len(parts) == 3 and _BACKUP_FILE_RE.match(parts[2]):
                wal.backup_files[parts[2]] = info.key
        return wal

    def _segment_size(self, wal: WalArchive, backups: list[Backup]) -> None:
        size = next((b.segment_size for b in backups if b.segment_size), None)
        if size is None and self._raw_segments:
            size = self._probe_header(next(iter(sorted(self._raw_segments.values(), key=lambda i: i.key)))).get(
                "segment_size")
        wal.segment_size = size
        for b in backups:
            b.segment_size = b.segment_size or size
        if size is None:
            return
        for name, info in self._raw_segments.items():
            try:
                seg = parse_segment_name(name, size)
            except ValueError:
                continue
            wal.segments.setdefault(seg.timeline, {})[seg.segno] = WalSegment(
                seg.timeline, seg.segno, info.key, info.size, info.last_modified)

    def _probe_header(self, info) -> dict:
        import struct

        with self.open_wal(info.key, verify=False) as stream:
            head = stream.read(40)
        magic, flags = struct.unpack_from("<HH", head, 0)
        sysid, seg_size = struct.unpack_from("<QI", head, 24)
        if not flags & 0x0002:
            raise CorruptBackup(f"WAL segment {info.key} does not start with a long page header",
                                checked="the first page header of the oldest archived segment",
                                fix="the segment is damaged; check the repository with `pgbackrest verify`")
        return {"segment_size": seg_size, "system_identifier": sysid, "major": XLOG_PAGE_MAGIC.get(magic)}

    def _read_histories(self, wal: WalArchive) -> None:
        for tli, key in wal.history_keys.items():
            with self.store.open(key) as f:
                text = f.read(1 << 20).decode("utf-8", "replace")
            try:
                wal.histories[tli] = parse_history(text)
            except ValueError as exc:
                raise CorruptBackup(f"timeline history {key} is malformed ({exc})",
                                    checked="parsing every .history file in the archive",
                                    fix="restore the file from another copy of the repository") from exc

    def find_wal(self, name: str) -> str | None:
        """A fresh lookup of one WAL or history file in the stanza's archive; None when absent."""
        self._resolve_stanza()
        if not self._archive_ids:
            self._archive_ids = parse_archive_info(self._read_info(f"archive/{self.stanza}/archive.info"))
        for aid in reversed(self._archive_ids):
            base = f"archive/{self.stanza}/{aid}/"
            if HISTORY_RE.match(name):
                if self.store.stat(base + name) is not None:
                    return base + name
                continue
            for info in self.store.list(f"{base}{name[:16]}/{name}-"):
                m = SEGMENT_KEY_RE.match(info.key.rsplit("/", 1)[1])
                if m and m.group(1) == name:
                    return info.key
        return None

    def open_wal(self, key: str, *, verify: bool = True) -> BinaryIO:
        """The segment's bytes; for a segment, checked against the SHA-1 in its name at EOF."""
        fname = key.rsplit("/", 1)[1]
        m = SEGMENT_KEY_RE.match(fname)
        codec = {".gz": "gz", ".bz2": "bz2", ".lz4": "lz4", ".zst": "zst", None: "none"}.get(
            m.group(3) if m else None, "none")
        stream = open_codec(self.store.open(key), codec, label=key)
        if m is None or not verify:
            return stream
        # read, close and a with block: all that a WAL reader (the spool, the cli) does with the stream
        return cast(BinaryIO, _Sha1Checked(stream, m.group(2), key))

    # -- materialize -------------------------------------------------------------------------
    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *, owner=None) -> Materialized:
        self.check_complete(backup)
        manifest = self._manifest(backup)
        layout = _Layout(backup.name, pgdata, run_dir / "tablespaces", manifest)
        layout.create(owner)
        files = [f for f in manifest.files if f.name != "pg_data/tablespace_map" and layout.local(f.name)]
        control = [f for f in files if f.name == "pg_data/global/pg_control"]
        rest = sorted((f for f in files if f not in control), key=lambda f: -f.size)  # big files start first
        cancel = threading.Event()

        def job(f: ManifestFile) -> tuple[int, int]:
            dest = layout.local(f.name)
            assert dest is not None, "files holds the ones placed on this side"
            return self._restore_file(backup, manifest, f, dest, owner, cancel)

        # files in flight: the run's fetch concurrency (pgbackrest restore's --process-max); on a
        # CPU-bound runner, 8 threads cost more in hand-offs than they gain (bench/README.md)
        workers = fetch_workers(self)
        # a damaged file or Ctrl-C: the other downloads stop at their next read
        results = run_jobs(job, rest, workers=workers, name="pgbackrest-fetch", cancel=cancel)
        results += [job(f) for f in control]  # pg_control last: until then the directory cannot start
        log.info("pgbackrest: restored %d files of %s, every SHA-1 checked", len(results), backup.name)
        return Materialized(pgdata=pgdata, bytes_fetched=sum(r[0] for r in results),
                            bytes_written=sum(r[1] for r in results), manifest=None,
                            tablespaces=layout.tablespaces, contents_verified=True,
                            contents_check="every file's size and SHA-1 against backup.manifest")

    def _manifest(self, backup: Backup) -> Manifest:
        key = backup.details["manifest"]
        problems = []
        for candidate in (key, key + ".copy"):
            if self.store.stat(candidate) is None:
                problems.append(f"{candidate}: missing")
                continue
            with self.store.open(candidate) as f:
                ini = parse_ini(f.read(), candidate)
            if ini.checksum_ok:
                manifest = parse_manifest(ini, candidate)
                if manifest.block_incremental or manifest.bundle_raw:  # raw bundles come with block incremental
                    raise UnsupportedRepository.block_incremental([backup.name])
                return manifest
            problems.append(f"{candidate}: checksum mismatch")
        raise CorruptBackup(f"backup {backup.name}: no readable backup.manifest", checked="; ".join(problems),
                            fix="restore another backup, or repair the repository with pgBackRest")

    def _repo_key(self, backup: Backup, manifest: Manifest, f: ManifestFile) -> str:
        owner_label = f.reference or backup.name
        base = f"backup/{self.stanza}/{owner_label}/"
        if f.bundle_id is not None:
            return f"{base}bundle/{f.bundle_id}"
        return base + f.name + COMPRESS_EXT[manifest.compress_type]

    def _restore_file(self, backup, manifest, f: ManifestFile, dest: Path, owner, cancel) -> tuple[int, int]:
        tmp = dest.with_name(dest.name + ".pgrestore.tmp") if f.name.endswith("global/pg_control") else dest
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            if owner:
                os.fchown(out.fileno(), *owner)
            if f.size == 0:
                fetched = written = 0
            else:
                fetched, written = self._copy_file(backup, manifest, f, out, cancel)
        if tmp != dest:
            os.replace(tmp, dest)
        return fetched, written

    def _copy_file(self, backup, manifest, f: ManifestFile, out, cancel) -> tuple[int, int]:
        key = self._repo_key(backup, manifest, f)
        if f.bundle_id is not None:
            assert f.bundle_offset is not None, "the manifest gives a bundled file its offset"
            # repo-size is left out of the manifest when it equals size (stored uncompressed)
            stored = f.repo_size if f.repo_size is not None else f.size
            raw = self.store.open_range(key, f.bundle_offset, f.bundle_offset + stored)
        else:
            raw = self.store.open(key)
        codec = manifest.compress_type
        where = f"{f.name} (stored in {key})"
        digest, written = hashlib.sha1(), 0
        counted = Counting(raw, cancel)
        try:
            if f.size <= _WHOLE and codec in WHOLE_CODECS:
                try:  # most files of a cluster: one read, one decode call, one write
                    data = decode_whole(_read_all(counted, f.repo_size or f.size), codec, f.size + 1)
                finally:
                    counted.close()
                digest.update(data)
                out.write(data)
                written = len(data)
            else:
                written = self._copy_stream(counted, codec, where, f.size, out, digest)
        except (OSError, EOFError, ValueError, RuntimeError) as exc:
            if isinstance(exc, InterruptedError) or (isinstance(exc, OSError) and exc.errno is not None):
                raise  # cancelled, or a local I/O error (disk full): not a property of the backup
            raise CorruptBackup(f"backup {backup.name}: {where} does not decompress ({exc})",
                                checked=f"{manifest.compress_type} stream of the file",
                                fix="the repository file is damaged: run `pgbackrest verify`, restore another "
                                    "backup") from exc
        if written != f.size or (f.checksum and digest.hexdigest() != f.checksum):
            raise CorruptBackup(
                f"backup {backup.name}: {where} fails pgBackRest's checksum "
                f"({written} bytes, sha1 {digest.hexdigest()}; the manifest says {f.size} bytes, sha1 {f.checksum})",
                checked="size and SHA-1 of every restored file against backup.manifest",
                fix="the repository file is damaged: run `pgbackrest verify` on the repository, and restore "
                    "another backup")
        return counted.count, written

    @staticmethod
    def _copy_stream(counted, codec: str, where: str, size: int, out, digest) -> int:
        """Decode into ``out``; ``digest`` sees every byte (the caller checks it against the manifest)."""
        written = 0
        with open_codec(counted, codec, label=where, limit=size) as stream, _writer(size) as writer:
            while chunk := stream.read(_STREAM_CHUNK):
                if writer is None:
                    digest.update(chunk)
                    out.write(chunk)
                else:  # a large file: hashed and written on a second thread while the next chunk decodes
                    writer.write(out.fileno(), chunk, also=digest.update)
                written += len(chunk)
        return written


def _read_all(raw, expected: int) -> bytes:
    """Every byte of ``raw``: the expected size in one read, then whatever else it has."""
    chunks = []
    while chunk := raw.read(max(expected, 1 << 16)):
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _writer(size: int):
    """A writer thread for a file worth it (:class:`~pytest_pgrestore.formats._tarstream.Writer`)."""
    from contextlib import nullcontext

    from ._tarstream import Writer

    return Writer() if size >= 16 << 20 else nullcontext()


def _stanzas(listing: list[ObjectInfo]) -> list[str]:
    found = set()
    for info in listing:
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2] in ("archive.info", "archive.info.copy"):
            found.add(parts[1])
    return sorted(found)


def _mkdir(path: Path, owner) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner:
        os.chown(path, *owner)


class _Layout:
    """Where each manifest name lands: ``pg_data/…`` in PGDATA, ``pg_tblspc/<oid>/…`` in the run dir."""

    def __init__(self, label: str, pgdata: Path, ts_root: Path, manifest: Manifest) -> None:
        self.label, self.pgdata, self.manifest = label, pgdata, manifest
        self.tablespaces = {name.split("/")[1]: ts_root / name.split("/")[1] for name in manifest.links
                            if name.startswith("pg_tblspc/") and name.split("/")[1].isdigit()}

    def local(self, name: str) -> Path | None:
        top, _, rest = name.partition("/")
        if ".." in rest.split("/") or rest.startswith("/"):
            raise CorruptBackup(f"backup {self.label}: manifest entry {name!r} points outside the restore",
                                checked="every path in backup.manifest", fix="this manifest is not pgBackRest's")
        if top == "pg_data":
            return self.pgdata / rest if rest else self.pgdata
        if top == "pg_tblspc":
            oid, _, sub = rest.partition("/")
            if oid in self.tablespaces:
                return self.tablespaces[oid] / sub if sub else self.tablespaces[oid]
        return None

    def create(self, owner) -> None:
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        for p in sorted(self.manifest.paths):
            if (path := self.local(p)) is not None:
                _mkdir(path, owner)
        for oid, path in self.tablespaces.items():
            _mkdir(path, owner)
            link = self.pgdata / "pg_tblspc" / oid
            _mkdir(link.parent, owner)
            os.symlink(path, link)
        _mkdir(self.pgdata / "pg_wal", owner)


class _Sha1Checked:
    """Reads through; at EOF the SHA-1 must be the one pgBackRest put in the segment's name."""

    def __init__(self, stream: BinaryIO, expected: str, key: str) -> None:
        self.stream, self.expected, self.key = stream, expected, key
        self.digest = hashlib.sha1()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if data:
            self.digest.update(data)
        elif self.digest.hexdigest() != self.expected:
            raise CorruptBackup(f"WAL segment {self.key} fails its checksum (sha1 {self.digest.hexdigest()})",
                                checked="the SHA-1 of the decompressed segment against the one in its name",
                                fix="the archived segment is damaged: run `pgbackrest verify`; re-archive it "
                                    "from the primary if it still has it")
        return data

    def close(self) -> None:
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
