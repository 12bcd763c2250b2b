"""pgBackRest's repository files, read natively (pure): ``backup.info``, ``archive.info``, ``backup.manifest``.

All three are INI files whose values are JSON.  Each carries its own checksum
(``[backrest] backrest-checksum``): the SHA-1 of the sections and keys rendered as one JSON
object, in file order, without the checksum itself.  A file whose checksum does not match is
refused, and the caller falls back to the ``.copy`` pgBackRest keeps next to it.

Repository layout (repo root = ``repo1-path``)::

    archive/<stanza>/archive.info
    archive/<stanza>/<pgver>-<id>/<tli>.history
    archive/<stanza>/<pgver>-<id>/<16 hex>/<24 hex>-<sha1 of the segment>[.gz|.bz2|.lz4|.zst]
    archive/<stanza>/<pgver>-<id>/<16 hex>/<24 hex>.<offset>.backup
    backup/<stanza>/backup.info
    backup/<stanza>/<label>/backup.manifest
    backup/<stanza>/<label>/pg_data/<path>[.ext]      one object per file, or
    backup/<stanza>/<label>/bundle/<id>               many small files, each compressed alone
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import CorruptBackup, FormatError, UnsupportedRepository

__all__ = ["IniFile", "parse_ini", "BackupEntry", "parse_backup_info", "parse_archive_info", "ManifestFile",
           "Manifest", "parse_manifest", "UnsupportedRepository", "COMPRESS_EXT", "SEGMENT_KEY_RE"]

#: pgBackRest compress-type → object suffix
COMPRESS_EXT = {"none": "", "gz": ".gz", "bz2": ".bz2", "lz4": ".lz4", "zst": ".zst"}
SEGMENT_KEY_RE = re.compile(r"^([0-9A-F]{24})-([0-9a-f]{40})(\.(?:gz|bz2|lz4|zst|xz))?\Z")
_CIPHER_MAGIC = b"Salted__"  # OpenSSL's header on every aes-256-cbc file pgBackRest writes


@dataclass
class IniFile:
    sections: dict[str, dict[str, str]]  # section → key → raw JSON text
    checksum_ok: bool

    def get(self, section: str, key: str, default: Any = None) -> Any:
        raw = self.sections.get(section, {}).get(key)
        return default if raw is None else json.loads(raw)


def parse_ini(data: bytes, name: str) -> IniFile:
    """Parse one info/manifest file and check its embedded checksum."""
    if data.startswith(_CIPHER_MAGIC):
        raise UnsupportedRepository.encrypted(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptBackup(f"{name} is not UTF-8 text", checked="decoding the info file",
                            fix="restore the file from its .copy or from another copy of the repository") from exc
    sections: dict[str, dict[str, str]] = {}
    parts: list[str] = []
    expected = None
    section = last = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise CorruptBackup(f"{name}: malformed line {line[:80]!r}", checked="INI syntax of the file",
                                fix="restore the file from its .copy")
        if section == "backrest" and key == "backrest-checksum":
            expected = json.loads(value)
            continue
        sections.setdefault(section, {})[key] = value
        if section != last:
            parts.append(("}," if last is not None else "") + json.dumps(section, ensure_ascii=False) + ":{")
            last = section
        else:
            parts.append(",")
        parts.append(json.dumps(key, ensure_ascii=False) + ":" + value)
    actual = hashlib.sha1(("{" + "".join(parts) + "}}").encode("utf-8")).hexdigest()
    return IniFile(sections, checksum_ok=expected is not None and actual == expected)


@dataclass
class BackupEntry:
    label: str
    type: str  # full | diff | incr
    prior: str | None
    references: list[str]
    archive_start: str
    archive_stop: str
    lsn_start: str
    lsn_stop: str
    started: datetime
    stopped: datetime
    db_id: int
    size: int
    repo_size: int
    error: bool
    block_incremental: bool
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def _epoch(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def parse_backup_info(ini: IniFile) -> tuple[list[BackupEntry], dict[int, dict[str, Any]]]:
    """(backups oldest first, db history id → {db-version, db-system-id, …})."""
    backups = []
    for label, raw in ini.sections.get("backup:current", {}).items():
        b = json.loads(raw)
        backups.append(BackupEntry(
            label=label, type=b["backup-type"], prior=b.get("backup-prior"),
            references=list(b.get("backup-reference") or []),
            archive_start=b.get("backup-archive-start", ""), archive_stop=b.get("backup-archive-stop", ""),
            lsn_start=b.get("backup-lsn-start", ""), lsn_stop=b.get("backup-lsn-stop", ""),
            started=_epoch(b["backup-timestamp-start"]), stopped=_epoch(b["backup-timestamp-stop"]),
            db_id=int(b["db-id"]), size=int(b.get("backup-info-size", 0)),
            repo_size=int(b.get("backup-info-repo-size", 0)), error=bool(b.get("backup-error", False)),
            block_incremental="backup-info-repo-size-map" in b, raw=b))
    backups.sort(key=lambda e: e.label)  # labels sort chronologically
    history = {int(k): json.loads(v) for k, v in ini.sections.get("db:history", {}).items()}
    return backups, history


def parse_archive_info(ini: IniFile) -> list[str]:
    """Archive ids (``<pgver>-<id>``), oldest first; the current one last."""
    ids = []
    for key, raw in sorted(ini.sections.get("db:history", {}).items(), key=lambda kv: int(kv[0])):
        ids.append(f"{json.loads(raw)['db-version']}-{int(key)}")
    return ids


@dataclass(frozen=True)
class ManifestFile:
    name: str  # pg_data/base/1/1259, pg_tblspc/16385/PG_15_…/16386/16387
    size: int
    checksum: str | None  # SHA-1 of the file's bytes (absent for empty files)
    reference: str | None  # label of the backup that stores it (None: this backup)
    repo_size: int | None
    bundle_id: int | None
    bundle_offset: int | None


@dataclass
class Manifest:
    label: str
    compress_type: str  # none | gz | bz2 | lz4 | zst
    bundle_raw: bool
    block_incremental: bool
    files: list[ManifestFile]
    paths: list[str]
    links: dict[str, dict[str, Any]]  # name → {"path": …, "tablespace-id": …} for type=link targets
    db_version: str


def parse_manifest(ini: IniFile, name: str) -> Manifest:
    compress = ini.get("backup:option", "option-compress-type")
    if compress is None:  # before 2.27 only a flag, and it meant gzip
        compress = "gz" if ini.get("backup:option", "option-compress", False) else "none"
    if compress not in COMPRESS_EXT:
        raise FormatError(f"{name}: compression {compress!r} is not supported",
                          checked="option-compress-type in the manifest",
                          fix="use gz, bz2, lz4, zst or none (pgBackRest's supported types)")
    files = []
    for fname, raw in ini.sections.get("target:file", {}).items():
        f = json.loads(raw)
        if "bi" in f or "bim" in f:
            raise UnsupportedRepository.block_incremental([ini.get("backup", "backup-label", name)])
        files.append(ManifestFile(fname, int(f["size"]), f.get("checksum"), f.get("reference"),
                                  f.get("repo-size"), f.get("bni"), f.get("bno", 0)))  # bno: omitted when 0
    links = {}
    for tname, raw in ini.sections.get("backup:target", {}).items():
        t = json.loads(raw)
        if t.get("type") == "link":
            links[tname] = t
    return Manifest(
        label=ini.get("backup", "backup-label"), compress_type=compress,
        bundle_raw=bool(ini.get("backup", "backup-bundle-raw", False)),
        block_incremental=bool(ini.get("backup", "backup-block-incr", False)),
        files=files, paths=list(ini.sections.get("target:path", {})), links=links,
        db_version=ini.get("backup:db", "db-version", ""))
