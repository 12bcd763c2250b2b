"""The ``walg`` format: read WAL-G's storage layout directly, with no ``wal-g`` binary.

Layout under the prefix (``WALG_S3_PREFIX`` / ``WALG_FILE_PREFIX``; see docs/formats/walg.md)::

    basebackups_005/<name>_backup_stop_sentinel.json     written last: "the backup exists"
    basebackups_005/<name>/metadata.json                 times, LSNs, permanence, user data
    basebackups_005/<name>/files_metadata.json           per-file flags (deltas need it)
    basebackups_005/<name>/tar_partitions/part_N.tar.<ext>, copy_N.tar.<ext>,
                                          pg_control.tar.<ext>, backup_label.tar.<ext>
    wal_005/<segment | tli.history | seg.off.backup | seg.partial>[.<ext>]

Objects are compressed (extension: lz4, zst, br, lzma, gz, or none) and then, optionally,
encrypted with libsodium; nothing marks the encryption, so each object's first bytes decide:
a codec's magic means plain, anything else needs the configured key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from ..errors import (
    CorruptBackup,
    EncryptedWithoutKey,
    FormatError,
    PgRestoreError,
    UnsupportedEncryption,
    UsageError,
)
from ..store import ObjectInfo, ObjectStore
from ..store._base import Readable
from ._base import Materialized, missing_objects
from ._catalog import Backup, Catalog, Unfinished, WalArchive, WalSegment
from ._codecs import _Prefixed, open_codec
from ._crypto import LibsodiumKey, SecretStreamReader, read_full
from ._parallel import Counting, fetch_workers
from ._wal import BACKUP_HISTORY_RE, HISTORY_RE, SEGMENT_RE, infer_segment_size, parse_history
from ._walg_layout import (
    BACKUP_NAME_RE,
    BASE,
    SENTINEL_SUFFIX,
    WAL,
    apply_metadata,
    codec_of,
    looks_plain,
    parse_sentinel,
    pgp_or_kms,
    tar_kind,
    wal_base,
)

log = logging.getLogger(__name__)

__all__ = ["WalgFormat", "EncryptedWithoutKey", "UnsupportedEncryption"]

_HEAD = 512
#: WAL-G settings that select a crypter we do not implement (``ConfigureCrypterForSpecificConfig``).
FOREIGN_CRYPTO_VARS = {
    "WALG_PGP_KEY": "OpenPGP", "WALG_PGP_KEY_PATH": "OpenPGP", "WALG_GPG_KEY_ID": "OpenPGP",
    "WALG_ENVELOPE_PGP_KEY": "envelope PGP", "WALG_ENVELOPE_PGP_KEY_PATH": "envelope PGP",
    "WALG_ENVELOPE_PGP_YC_CSE_KMS_KEY_ID": "envelope PGP (Yandex KMS)",
    "WALG_CSE_KMS_ID": "AWS KMS client-side encryption", "YC_CSE_KMS_KEY_ID": "Yandex KMS encryption",
}


class WalgFormat:
    name = "walg"
    LAYOUT_HINT = "basebackups_005/<name>_backup_stop_sentinel.json and wal_005/ (WAL-G)"
    TAKES_ENV = True

    def __init__(self, store: ObjectStore, env: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.env = dict(os.environ if env is None else env)
        self.block_size = _positive_int(self.env, "WALG_PG_BLOCK_SIZE", 8192)
        self._key: LibsodiumKey | None = None
        self._key_read = False

    @classmethod
    def detect(cls, store: ObjectStore) -> bool:
        return any(True for _ in zip(range(1), store.list(BASE), strict=False))

    @property
    def key(self) -> LibsodiumKey | None:
        if not self._key_read:
            self._key = LibsodiumKey.from_env(self.env)
            self._key_read = True
        return self._key

    # -- decoding --------------------------------------------------------------------------
    def open_object(self, key: str, *, tar: bool) -> tuple[BinaryIO, Counting]:
        """A decoded stream of one object and the counter of bytes read from the store."""
        counted = Counting(self.store.open(key))
        return self.decode(counted, key, tar=tar), counted

    def decode(self, raw: Readable, key: str, *, tar: bool) -> BinaryIO:
        """``raw`` (one object as the store holds it) decrypted when WAL-G encrypted it, and
        decompressed by its suffix."""
        codec = codec_of(key, tar=tar)
        head = read_full(raw, _HEAD)
        src: Readable = _Prefixed(head, raw)
        if self._encrypted(key, head, codec, tar=tar):
            assert self.key is not None, "_encrypted says so only with a key"
            src = SecretStreamReader(src, self.key, key)
        return open_codec(src, codec, key)

    def _encrypted(self, key: str, head: bytes, codec: str | None, *, tar: bool) -> bool:
        plain = looks_plain(head, codec, tar=tar)
        if plain:
            return False
        if self.key is not None:
            return True  # WAL-G applies the configured crypter to every object it reads
        if plain is None:
            return False  # brotli has no magic: try it, failures say "or encrypted"
        foreign = pgp_or_kms(head)
        what = f"looks {foreign}-encrypted" if foreign else "is encrypted (or not what its extension says)"
        raise EncryptedWithoutKey(
            f"{key} {what}: its first bytes are not {codec or 'an uncompressed object'}'s",
            checked="the object's first bytes against its extension's magic; libsodium variables "
                    "WALG_LIBSODIUM_KEY and WALG_LIBSODIUM_KEY_PATH are not set",
            fix="set WALG_LIBSODIUM_KEY (or WALG_LIBSODIUM_KEY_PATH, with WALG_LIBSODIUM_KEY_TRANSFORM) to "
                "the key the backups were written with" + ("" if not foreign else
                                                             f"; {foreign} is not supported"))

    # -- catalog ---------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        self._refuse_foreign_crypto()
        sentinels, objects = self._base_listing()
        wal = self._wal_listing()
        with ThreadPoolExecutor(max_workers=min(fetch_workers(self), max(1, len(sentinels)))) as pool:
            loaded = dict(zip(sentinels, pool.map(lambda n: self._load(n, sentinels[n], objects.get(n, {})),
                                                   sentinels), strict=True))
        backups = [b for b in loaded.values() if b is not None]
        _link_chains(backups)
        self._by_name = {b.name: b for b in backups}
        self._read_histories(wal)
        self._segment_size(backups, wal)
        self._index_segments(wal)
        backups.sort(key=lambda b: (b.stop_lsn, b.name))
        latest = max(sentinels.items(), key=lambda kv: (kv[1].last_modified, kv[1].key), default=None)
        cat = Catalog(source=self.store.description, format=self.name, backups=backups, wal=wal)
        cat.latest = latest[0] if latest and latest[0] in {b.name for b in backups} else None
        cat.wal_check = self.wal_verify(cat)
        cat.unfinished = [Unfinished(n, "in progress", f"objects under {BASE}{n}/ but no {n}{SENTINEL_SUFFIX} yet")
                          for n in sorted(set(objects) - set(sentinels)) if BACKUP_NAME_RE.match(n)]
        return cat

    def check_complete(self, backup: Backup) -> None:
        """Every tar the backup's ``TarFileSets`` names (files_metadata.json, or an older sentinel)
        is in the listing, along the whole delta chain: a deleted partition is refused by name."""
        if backup.details.get("complete"):
            return
        for b in [getattr(self, "_by_name", {}).get(n, backup) for n in backup.details.get("chain") or [backup.name]]:
            sets, index = self._tar_file_sets(b)
            if sets is None:
                continue  # no index (files metadata disabled, WAL-E): nothing to check against
            tars = b.details["tars"]
            missing = sorted(f"{BASE}{b.name}/tar_partitions/{t}" for t in sets if t not in tars)
            if missing:
                raise missing_objects(b.name, missing, index=f"{index} (TarFileSets)",
                                      looked=f"the listing of {BASE}{b.name}/tar_partitions/ ({len(tars)} objects)")
        backup.details["complete"] = True

    def _tar_file_sets(self, b: Backup) -> tuple[dict | None, str]:
        sentinel = b.details["sentinel"]
        key = b.details.get("files_metadata")
        if key and not sentinel.files_metadata_disabled:
            sets = self._read_json(key).get("TarFileSets")
            if isinstance(sets, dict) and sets:
                return sets, key
        if sentinel.tar_file_sets:
            return sentinel.tar_file_sets, b.details["sentinel_key"]
        return None, ""

    def wal_verify(self, cat: Catalog, *, timeline: int | None = None, start_segno: int | None = None):
        """``wal-g wal-verify integrity timeline`` over this catalog's listing (no download)."""
        from ._walg_verify import wal_verify

        return wal_verify(cat.wal, cat.backups, timeline=timeline, start_segno=start_segno,
                          upload_window=_positive_int(self.env, "WALG_UPLOAD_CONCURRENCY", 16),
                          delayed=int(self.env.get("WALG_INTEGRITY_MAX_DELAYED_WALS") or 0))

    def _refuse_foreign_crypto(self) -> None:
        set_vars = [v for v in FOREIGN_CRYPTO_VARS if self.env.get(v)]
        if set_vars:
            kinds = sorted({FOREIGN_CRYPTO_VARS[v] for v in set_vars})
            raise UnsupportedEncryption(
                f"WAL-G is configured for {', '.join(kinds)}, which this restore cannot decrypt",
                checked=f"env {', '.join(set_vars)} (WAL-G prefers these over libsodium)",
                fix="restore these backups with wal-g backup-fetch; only libsodium (WALG_LIBSODIUM_KEY) and "
                    "unencrypted backups are read natively")

    def _base_listing(self) -> tuple[dict[str, ObjectInfo], dict[str, dict[str, ObjectInfo]]]:
        sentinels: dict[str, ObjectInfo] = {}
        objects: dict[str, dict[str, ObjectInfo]] = {}
        for info in self.store.list(BASE):
            rest = info.key[len(BASE):]
            if "/" not in rest:
                if rest.endswith(SENTINEL_SUFFIX):
                    name = rest[: -len(SENTINEL_SUFFIX)]
                    if BACKUP_NAME_RE.match(name):
                        sentinels[name] = info
                continue
            name, sub = rest.split("/", 1)
            objects.setdefault(name, {})[sub] = info
        for name in sorted(set(objects) - set(sentinels)):
            log.info("%s%s has no sentinel: an unfinished or deleted backup, ignored as WAL-G does", BASE, name)
        return sentinels, objects

    def _read_json(self, key: str) -> dict:
        with self.store.open(key) as raw:
            data = raw.read(64 << 20)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise FormatError(f"{key} is not valid JSON ({exc})", checked="WAL-G's JSON objects are plain JSON",
                              fix="the object is damaged") from exc

    def _load(self, name: str, sentinel_info: ObjectInfo, objs: dict[str, ObjectInfo]) -> Backup | None:
        with self.store.open(sentinel_info.key) as raw:
            sentinel = parse_sentinel(raw.read(64 << 20), sentinel_info.key)
        if "metadata.json" in objs:
            apply_metadata(sentinel, self._read_json(objs["metadata.json"].key))
        tars = {sub.split("/", 1)[1]: info.key for sub, info in objs.items()
                if sub.startswith("tar_partitions/") and tar_kind(sub.split("/", 1)[1])}
        m = BACKUP_NAME_RE.match(name)
        assert m is not None, "_base_listing keeps the sentinels of well-named backups only"
        details = {
            "sentinel": sentinel, "sentinel_key": sentinel_info.key,
            "sentinel_modified": sentinel_info.last_modified, "tars": tars,
            "files_metadata": objs["files_metadata.json"].key if "files_metadata.json" in objs else None,
            "permanent": sentinel.is_permanent, "user_data": sentinel.user_data,
            "start_segment": m.group(1), "delta_from": sentinel.delta_from,
            "encryption": self._probe_encryption(name, tars),
        }
        backup = Backup(
            name=name, format=self.name, start_lsn=sentinel.start_lsn,
            stop_lsn=sentinel.finish_lsn if sentinel.finish_lsn is not None else sentinel.start_lsn,
            timeline=int(m.group(1)[:8], 16), start_time=sentinel.start_time,
            stop_time=sentinel.finish_time or sentinel_info.last_modified,
            pg_major=_major(sentinel.pg_version), system_identifier=sentinel.system_identifier,
            stored_bytes=sum(o.size for o in objs.values()) + sentinel_info.size,
            size=sentinel.uncompressed_size, details=details)
        refusal = self._encryption_refusal(name, details["encryption"])
        if refusal is not None:
            details["refusal"] = refusal
        if sentinel.finish_lsn is None:
            details["refusal"] = FormatError(
                f"backup {name}: its sentinel has no FinishLSN, so where it becomes consistent is unknown",
                checked=f"{sentinel_info.key} and {name}/metadata.json",
                fix="restore it with wal-g backup-fetch, or take a new backup with a current WAL-G")
        return backup

    def _encryption_refusal(self, name: str, encryption: str) -> PgRestoreError | None:
        if encryption == "libsodium" and self.key is None:
            return EncryptedWithoutKey(
                f"backup {name} is encrypted and no libsodium key is configured",
                checked="the first bytes of its pg_control tar (no compression magic); env WALG_LIBSODIUM_KEY "
                        "and WALG_LIBSODIUM_KEY_PATH are not set",
                fix="set WALG_LIBSODIUM_KEY (or WALG_LIBSODIUM_KEY_PATH, and WALG_LIBSODIUM_KEY_TRANSFORM if "
                    "the key is hex or base64) as for wal-g backup-fetch")
        if encryption not in ("none", "unknown", "libsodium"):
            return UnsupportedEncryption(
                f"backup {name} looks {encryption}-encrypted, which this restore cannot decrypt",
                checked="the first bytes of its pg_control tar",
                fix="restore it with wal-g backup-fetch; only libsodium and unencrypted backups are read natively")
        return None

    def _probe_encryption(self, name: str, tars: dict[str, str]) -> str:
        """One ranged read of the smallest tar: is this backup encrypted, and how?"""
        probe = next((tars[f] for f in sorted(tars) if f.startswith("pg_control.")), None) or \
            next(iter(sorted(tars.values())), None)
        if probe is None:
            return "unknown"
        with _open_range(self.store, probe, _HEAD) as raw:
            head = read_full(raw, _HEAD)
        codec = codec_of(probe, tar=True)
        plain = looks_plain(head, codec, tar=True)
        if plain:
            return "none"
        if plain is None:
            return "unknown"
        if self.key is not None:
            return "libsodium"  # WAL-G applies the configured crypter to every object
        return pgp_or_kms(head) or "libsodium"

    def _wal_listing(self) -> WalArchive:
        wal = WalArchive()
        for info in self.store.list(WAL):
            rest = info.key[len(WAL):]
            if "/" in rest:
                continue
            base, _ext = wal_base(rest)
            if SEGMENT_RE.match(base):
                wal.raw[base] = info
            elif m := HISTORY_RE.match(base):
                wal.history_keys[int(m.group(1), 16)] = info.key
            elif BACKUP_HISTORY_RE.match(base):
                wal.backup_files[base] = info.key
        return wal

    def _read_small(self, key: str) -> bytes:
        stream, _ = self.open_object(key, tar=False)
        with stream:
            return stream.read(1 << 20)

    def _read_histories(self, wal: WalArchive) -> None:
        for tli, key in wal.history_keys.items():
            try:
                wal.histories[tli] = parse_history(self._read_small(key).decode("utf-8", "replace"))
            except ValueError as exc:
                raise CorruptBackup(f"timeline history {key} is malformed ({exc})",
                                    checked="parsing every .history file in wal_005/",
                                    fix="restore the file from another copy of the archive") from exc

    def _segment_size(self, backups: list[Backup], wal: WalArchive) -> None:
        """From WALG_PG_WAL_SIZE, the backup names, and one WAL long header (which also gives the major)."""
        size = None
        if self.env.get("WALG_PG_WAL_SIZE"):
            size = _positive_int(self.env, "WALG_PG_WAL_SIZE", 16) << 20
        for b in backups:
            inferred = infer_segment_size(b.start_lsn, b.details["start_segment"])
            size = size or inferred
        newest = max(backups, key=lambda b: b.stop_lsn, default=None)
        if newest is not None and newest.details["start_segment"] in wal.raw:
            hdr = self._long_header(wal.raw[newest.details["start_segment"]].key)
            if hdr is not None:
                if size and hdr["segment_size"] != size:
                    log.warning("WAL long header says %d-byte segments, the names say %d", hdr["segment_size"], size)
                size = hdr["segment_size"]
                newest.segment_size = size
        wal.segment_size = size or (16 << 20)
        for b in backups:
            b.segment_size = b.segment_size or wal.segment_size

    def _long_header(self, key: str) -> dict | None:
        from ._basebackup import parse_long_header

        try:
            return parse_long_header(self._read_small_head(key))
        except (ValueError, EncryptedWithoutKey):  # the backup's own refusal says it better
            return None

    def _read_small_head(self, key: str) -> bytes:
        stream, _ = self.open_object(key, tar=False)
        with stream:
            return stream.read(40)

    def _index_segments(self, wal: WalArchive) -> None:
        from ._wal import parse_segment_name

        size = wal.segment_size
        assert size is not None, "_segment_size sets it, to 16 MiB at the least"
        for base, info in wal.raw.items():
            try:
                seg = parse_segment_name(base, size)
            except ValueError:
                continue
            wal.segments.setdefault(seg.timeline, {})[seg.segno] = WalSegment(
                seg.timeline, seg.segno, info.key, info.size, info.last_modified)

    # -- materialize -------------------------------------------------------------------------
    def materialize(self, backup: Backup, pgdata: Path, run_dir: Path, *, owner=None) -> Materialized:
        from ._walg_fetch import materialize

        return materialize(self, backup, pgdata, run_dir, owner=owner)

    # -- WAL ---------------------------------------------------------------------------------
    def find_wal(self, name: str) -> str | None:
        """A fresh lookup of one WAL file under any extension WAL-G writes; None when absent."""
        for info in self.store.list(f"{WAL}{name}"):
            if wal_base(info.key[len(WAL):])[0] == name:
                return info.key
        return None

    def open_wal(self, key: str) -> BinaryIO:
        return self.open_object(key, tar=False)[0]


def _link_chains(backups: list[Backup]) -> None:
    """Each delta's chain down to its full backup, or a refusal naming the missing link."""
    by_name = {b.name: b for b in backups}
    for b in backups:
        chain, cur, seen = [b.name], b, {b.name}
        while cur is not None and cur.details["delta_from"]:
            parent = by_name.get(cur.details["delta_from"])
            if parent is None or parent.name in seen:
                b.details.setdefault("refusal", FormatError(
                    f"delta backup {b.name} needs {cur.details['delta_from']}, which is not in the store",
                    checked=f"sentinels under {BASE} along the chain {' <- '.join(reversed(chain))}",
                    fix="restore a backup whose chain is complete (a full backup, or a later one)"))
                break
            chain.append(parent.name)
            seen.add(parent.name)
            cur = parent
        b.details["chain"] = list(reversed(chain))  # full backup first


def _major(pg_version: int | None) -> int | None:
    if not pg_version:
        return None
    return pg_version // 10000 if pg_version >= 100000 else pg_version // 100


def _positive_int(env: Mapping[str, str], var: str, default: int) -> int:
    raw = env.get(var)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(f"env {var}={raw!r} is not a positive integer", fix=f"unset {var} or set it to e.g. {default}")
    return value


def _open_range(store: ObjectStore, key: str, n: int) -> BinaryIO:
    return store.open_range(key, 0, n)
