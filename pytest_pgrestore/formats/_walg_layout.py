"""WAL-G's storage layout, as pure functions: names, sentinels, metadata, object decoding choices.

Sources in WAL-G (github.com/wal-g/wal-g), for the quirks handled here:

* backup names ``base_<24 hex>[_D_<24 hex>][_<8 hex>]`` — ``internal/databases/postgres/backup.go``
  (``patternPgBackupName``); the timeline is the 8 hex digits after ``base_`` (``timeline.go``).
* sentinel ``<name>_backup_stop_sentinel.json`` written last — ``backup_push_handler.go``
  (``uploadMetadata``); key names from ``backup_sentinel_dto.go``.  Older writers: lowercase
  ``spec`` (WAL-E, ``tablespace_spec.go`` ``UnmarshalJSON``), ``Files``/``TarFileSets`` inside the
  sentinel and ``DeltaFromLSN`` instead of ``DeltaLSN`` (``DeprecatedSentinelFields``).
* ``metadata.json`` (``ExtendedMetadataDto``) is authoritative for ``is_permanent``
  (``backup-mark`` rewrites only it).
* tar objects ``part_N.tar.<ext>``, ``copy_N.tar.<ext>``, ``pg_control.tar.<ext>``,
  ``backup_label.tar.<ext>`` — ``tars_to_extract_provider.go`` (the sequential/concurrent split),
  ``copy_tar_ball_composer.go``; extensions from ``internal/compression``; ``tar`` or no extension
  means no compression (``internal/extract.go`` ``DecryptAndDecompressTar``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import FormatError
from ._catalog import XLOG_PAGE_MAGIC

__all__ = [
    "BASE", "WAL", "SENTINEL_SUFFIX", "BACKUP_NAME_RE", "EXT_CODECS", "Sentinel", "parse_sentinel",
    "parse_time", "tar_kind", "codec_of", "wal_base", "looks_plain", "pgp_or_kms",
]

BASE = "basebackups_005/"
WAL = "wal_005/"
SENTINEL_SUFFIX = "_backup_stop_sentinel.json"
BACKUP_NAME_RE = re.compile(r"^base_([0-9A-F]{24})(?:_D_([0-9A-F]{24}))?(?:_([0-9A-F]{8}))?$")
#: extension → codec for open_codec; None = stored as is.  lzo (WAL-E) is refused by name.
EXT_CODECS: dict[str, str | None] = {"lz4": "lz4", "zst": "zstd", "br": "brotli", "lzma": "lzma", "gz": "gzip",
                                     "tar": None, "": None}
_TAR_RE = re.compile(r"^(?:(part|copy)_(\d+)|(pg_control|backup_label))\.tar(?:\.([A-Za-z0-9]+))?$")
_STRONG_MAGIC = {"lz4": b"\x04\x22\x4d\x18", "zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b"}


@dataclass
class Sentinel:
    """What a sentinel says, whichever WAL-G (or WAL-E) version wrote it."""

    start_lsn: int
    finish_lsn: int | None
    pg_version: int | None
    system_identifier: int | None = None
    delta_from: str | None = None
    delta_full: str | None = None
    delta_lsn: int | None = None
    delta_count: int | None = None
    spec: dict[str, Any] | None = None
    files: dict[str, Any] | None = None  # legacy: file list inside the sentinel
    tar_file_sets: dict[str, list[str]] | None = None
    files_metadata_disabled: bool = False
    start_time: datetime | None = None
    finish_time: datetime | None = None
    is_permanent: bool = False
    user_data: Any = None
    uncompressed_size: int | None = None
    compressed_size: int | None = None
    version: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_delta(self) -> bool:
        return bool(self.delta_from)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 (nano) as Go writes it; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value)
    if not m:
        return None
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    micro = int((m.group(2) or "0").ljust(6, "0")[:6])
    zone = m.group(3)
    if zone == "Z":
        tz = timezone.utc
    else:
        from datetime import timedelta

        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return base.replace(microsecond=micro, tzinfo=tz).astimezone(timezone.utc)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_sentinel(text: bytes | str, key: str) -> Sentinel:
    """Parse a sentinel JSON; ``key`` names the object in errors."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"{key} is not valid JSON ({exc})", checked="the backup's stop sentinel",
                          fix="the sentinel is damaged; WAL-G would not list this backup either") from exc
    if not isinstance(raw, dict) or _int(raw.get("LSN")) is None:
        raise FormatError(f"{key} has no start LSN", checked="the sentinel's LSN field",
                          fix="this object is not a WAL-G sentinel")
    if raw.get("DeltaFrom") and raw.get("DeltaLSN") is None and raw.get("DeltaFromLSN") is None:
        raise FormatError(f"{key}: a delta backup without DeltaLSN", checked="DeltaFrom, DeltaLSN, DeltaFromLSN",
                          fix="the sentinel is damaged")
    spec = raw.get("Spec", raw.get("spec"))
    return Sentinel(
        start_lsn=raw["LSN"], finish_lsn=_int(raw.get("FinishLSN")), pg_version=_int(raw.get("PgVersion")),
        system_identifier=_int(raw.get("SystemIdentifier")),
        delta_from=raw.get("DeltaFrom") or None, delta_full=raw.get("DeltaFullName") or None,
        delta_lsn=_int(raw.get("DeltaLSN", raw.get("DeltaFromLSN"))), delta_count=_int(raw.get("DeltaCount")),
        spec=spec if isinstance(spec, dict) and spec else None,
        files=raw.get("Files") if isinstance(raw.get("Files"), dict) else None,
        tar_file_sets=raw.get("TarFileSets") if isinstance(raw.get("TarFileSets"), dict) else None,
        files_metadata_disabled=bool(raw.get("FilesMetadataDisabled")),
        start_time=parse_time(raw.get("StartTime")), finish_time=parse_time(raw.get("FinishTime")),
        is_permanent=bool(raw.get("IsPermanent")), user_data=raw.get("UserData"),
        uncompressed_size=_int(raw.get("UncompressedSize")), compressed_size=_int(raw.get("CompressedSize")),
        version=_int(raw.get("Version")), raw=raw,
    )


def apply_metadata(sentinel: Sentinel, meta: dict[str, Any]) -> None:
    """``metadata.json`` wins where it says something (``backup-mark`` rewrites only it)."""
    sentinel.start_time = parse_time(meta.get("start_time")) or sentinel.start_time
    sentinel.finish_time = parse_time(meta.get("finish_time")) or sentinel.finish_time
    if "is_permanent" in meta:
        sentinel.is_permanent = bool(meta["is_permanent"])
    if "user_data" in meta:
        sentinel.user_data = meta["user_data"]
    sentinel.pg_version = sentinel.pg_version or _int(meta.get("pg_version"))
    sentinel.finish_lsn = sentinel.finish_lsn or _int(meta.get("finish_lsn"))
    sentinel.system_identifier = sentinel.system_identifier or _int(meta.get("system_identifier"))
    sentinel.uncompressed_size = sentinel.uncompressed_size or _int(meta.get("uncompressed_size"))


def tar_kind(filename: str) -> tuple[str, int] | None:
    """``part_003.tar.lz4`` → (``part``, 3); ``pg_control.tar`` → (``pg_control``, 0); else None."""
    m = _TAR_RE.match(filename)
    if not m:
        return None
    return (m.group(1), int(m.group(2))) if m.group(1) else (m.group(3), 0)


def codec_of(key: str, *, tar: bool) -> str | None:
    """The codec an object's last extension names; a tar's ``.tar`` and a WAL file's bare name mean none."""
    name = key.rsplit("/", 1)[-1]
    if tar:
        ext = name.rsplit(".tar", 1)[1].lstrip(".") if ".tar" in name else ""
    else:
        base, ext = wal_base(name)
    if ext not in EXT_CODECS:
        hint = "lzo (WAL-E) is not supported" if ext == "lzo" else f"extensions: {', '.join(sorted(EXT_CODECS)[1:])}"
        raise FormatError(f"{key}: unknown compression extension .{ext}", checked=hint,
                          fix="re-push the backup with WALG_COMPRESSION_METHOD=lz4, zstd, brotli, lzma or none")
    return EXT_CODECS[ext]


_WAL_EXTS = ("lz4", "zst", "br", "lzma", "gz", "lzo")


def wal_base(name: str) -> tuple[str, str]:
    """``000000010000000000000003.lz4`` → (``000000010000000000000003``, ``lz4``); no extension → ''."""
    stem, dot, ext = name.rpartition(".")
    if dot and ext in _WAL_EXTS:
        return stem, ext
    return name, ""


def looks_plain(head: bytes, codec: str | None, *, tar: bool) -> bool | None:
    """Does ``head`` (the first ≥ 512 bytes) look like an unencrypted object of ``codec``?

    True/False where the bytes can tell; None where they cannot (brotli has no magic).
    """
    if codec in _STRONG_MAGIC:
        return head.startswith(_STRONG_MAGIC[codec])
    if codec == "lzma":  # properties byte (lc/lp/pb) < 225, dictionary size ≥ 4 KiB and ≤ 1.5 GiB
        if len(head) < 13 or head[0] >= 225:
            return False
        dict_size = int.from_bytes(head[1:5], "little")
        return 1 << 12 <= dict_size <= 3 << 29
    if codec is None:
        if tar:
            return len(head) >= 262 and head[257:262] == b"ustar" or head[:512] == bytes(512)[: len(head[:512])]
        if len(head) >= 4 and int.from_bytes(head[:2], "little") in XLOG_PAGE_MAGIC:
            return True
        try:  # history and .backup files are ASCII text
            head.decode("ascii")
            return all(32 <= c < 127 or c in (9, 10, 13) for c in head)
        except UnicodeDecodeError:
            return False
    return None


def pgp_or_kms(head: bytes) -> str | None:
    """Name the foreign encryption an object starts with, if it looks like one we refuse."""
    if not head:
        return None
    # an OpenPGP message to a public key starts with a PKESK packet: tag 1 in the new format (0xC1)
    # or the old one (0x84/0x85), then its length, version 3 (or 6), an 8-byte key id, an algorithm
    pkesk = None
    if head[:1] == b"\xc1" and len(head) > 12 and head[1] < 192:
        pkesk = head[2:]
    elif head[:1] == b"\x84" and len(head) > 12:
        pkesk = head[2:]
    elif head[:1] == b"\x85" and len(head) > 13:
        pkesk = head[3:]
    if pkesk is not None and pkesk[0] in (3, 6) and pkesk[9] in (1, 2, 16, 18, 25):
        return "OpenPGP (WALG_PGP_KEY)"
    if head.startswith(b"\x01\x02\x02\x00"):  # AWS KMS ciphertext blob heading WAL-G's CSE envelope
        return "AWS KMS client-side encryption (WALG_CSE_KMS_ID)"
    return None
