"""Backup-store hygiene: how well the backups are protected, and whether they are there.

The seed runbook's security section ("verify bucket policies and encryption at rest (SSE)") and
its daily job ("validate last N backups exist") as checks:

* ``bucket_encryption``  — the bucket's default encryption (GetBucketEncryption) against a level;
* ``object_encryption``  — what a HEAD of the newest backup's objects (and newest WAL) reports,
  client-side encryption by the backup tool counting as protection;
* ``client_side_encryption`` — the newest backup is encrypted by the backup tool (from the format);
* ``public_access_block`` / ``bucket_policy`` — public access blocked, the policy not public;
* ``backup_count`` / ``backup_age`` / ``wal_continuity`` — listing only, through checks.py (the one
  implementation ``pgrestore verify`` uses too).

Every S3 call is a read the S3 client allows (storage/s3.py ``READ_OPERATIONS``).  A setting the
store does not implement, or that the key may not read, raises :class:`CheckSkipped` naming the
permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..errors import AccessDenied, CheckSkipped
from ._expectations import ENCRYPTION_LEVELS
from ._listing import check_backups, wal_continuity

__all__ = ["Verdict", "bucket_encryption", "object_encryption", "client_side_encryption", "public_access_block",
           "bucket_policy", "backup_count", "backup_age", "wal_continuity_check", "newest_backup"]

_SSE_LEVEL = {"AES256": "sse-s3", "aws:kms": "sse-kms", "aws:kms:dsse": "sse-kms"}
_NOT_ENCRYPTED = (None, "", "none", "unknown")
_MAX_HEADS = 6
_PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass
class Verdict:
    ok: bool
    detail: str


def _s3(store, operation: str):
    """The store as S3, or a skip: bucket settings mean nothing for a local directory."""
    if not hasattr(store, "bucket_setting"):
        raise CheckSkipped(f"{operation} is an S3 request; the source {store.description} is not in S3, "
                           "so its protection is the file system's")
    return store


def _read(store, operation: str):
    from ..store._s3 import NotSupported

    try:
        return _s3(store, operation).bucket_setting(operation)
    except NotSupported as exc:
        raise CheckSkipped(f"{exc.what}: this store cannot tell") from exc
    except AccessDenied as exc:
        raise _denied(exc, operation, store) from exc


def _denied(exc: AccessDenied, operation: str, store) -> CheckSkipped:
    permission = getattr(exc, "permission", operation)
    resource = getattr(exc, "resource", f"arn:aws:s3:::{store.bucket}")
    return CheckSkipped(f"the key may not perform {operation} on bucket {store.bucket}: the check needs "
                        f"{permission} on {resource} (docs/checks.md: the hygiene IAM policy)")


def bucket_encryption(store, level: str) -> Verdict:
    """The bucket encrypts new objects by default, at ``level`` (sse-s3: AES256 or KMS; sse-kms) or better."""
    config = _read(store, "GetBucketEncryption")
    if config is None:
        return Verdict(False, f"bucket {store.bucket}: expected default encryption {level} or stronger, found none "
                              f"(no ServerSideEncryptionConfiguration)")
    rules = config.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = (rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {})
    algorithm = default.get("SSEAlgorithm")
    found = _SSE_LEVEL.get(algorithm or "", "none")
    shown = algorithm + (f" (key {default['KMSMasterKeyID']})" if default.get("KMSMasterKeyID") else "") \
        if algorithm else "no default rule"
    if ENCRYPTION_LEVELS.index(found) < ENCRYPTION_LEVELS.index(level):
        return Verdict(False, f"bucket {store.bucket}: expected default encryption {level} or stronger, "
                              f"found {shown} ({found})")
    return Verdict(True, f"bucket {store.bucket}: default encryption {shown} ({found})")


def newest_backup(catalog):
    """The backup that finished last (what a ``latest`` restore starts from)."""
    return catalog.backups[-1] if catalog.backups else None


def _backup_keys(store, catalog, backup) -> list[str]:
    """The newest backup's largest objects and the newest WAL segment: what a HEAD samples."""
    tars = list((backup.details.get("tars") or {}).values())
    if not tars:  # other layouts: objects under a folder named after the backup
        found = [o for o in store.list("") if any(part == backup.name or part.startswith(backup.name + "_")
                                                  for part in o.key.split("/"))]
        tars = [o.key for o in sorted(found, key=lambda o: -o.size)]
    keys = tars[: _MAX_HEADS - 1]
    wal = catalog.wal.segments
    if wal:
        tli = max(wal)
        keys.append(wal[tli][max(wal[tli])].key)
    return keys


def object_encryption(store, catalog, level: str) -> Verdict:
    """The newest backup's objects are encrypted at rest at ``level`` or better."""
    backup = newest_backup(catalog)
    if backup is None:
        return Verdict(False, f"no backup in {catalog.source} to look at")
    cse = backup.details.get("encryption")
    if cse not in _NOT_ENCRYPTED:
        return Verdict(True, f"backup {backup.name} is encrypted by the backup tool ({cse}) before upload")
    s3 = _s3(store, "HeadObject")
    seen = {}
    for key in _backup_keys(s3, catalog, backup):
        try:
            seen[key] = s3.object_encryption(key)
        except AccessDenied as exc:
            raise _denied(exc, "HeadObject", s3) from exc
    weak = {k: v for k, v in seen.items()
            if ENCRYPTION_LEVELS.index(_SSE_LEVEL.get(v, "none")) < ENCRYPTION_LEVELS.index(level)}
    if weak:
        shown = ", ".join(f"{k} ({v or 'no server-side encryption'})" for k, v in weak.items())
        return Verdict(False, f"bucket {s3.bucket}: expected objects encrypted at rest with {level} or stronger, "
                              f"found {len(weak)} of {len(seen)} sampled objects of backup {backup.name} "
                              f"not: {shown}; enabling default encryption does not encrypt objects already "
                              f"stored (copy them onto themselves, or take a new backup)")
    return Verdict(True, f"bucket {s3.bucket}: {len(seen)} objects of backup {backup.name} (and the newest WAL) "
                         f"encrypted: {', '.join(sorted(set(filter(None, seen.values()))))}")


def client_side_encryption(catalog) -> Verdict:
    backup = newest_backup(catalog)
    if backup is None:
        return Verdict(False, f"no backup in {catalog.source} to look at")
    cse = backup.details.get("encryption")
    if cse in _NOT_ENCRYPTED:
        how = "its format has no client-side encryption" if backup.format == "basebackup" else \
            "the objects' first bytes show no encryption"
        return Verdict(False, f"backup {backup.name} ({backup.format}): expected encrypted by the backup tool, "
                              f"found not encrypted ({how})")
    return Verdict(True, f"backup {backup.name} ({backup.format}) is encrypted by the backup tool: {cse}")


def public_access_block(store) -> Verdict:
    config = _read(store, "GetPublicAccessBlock")
    if config is None:
        return Verdict(False, f"bucket {store.bucket}: expected a public access block, found none configured")
    flags = config.get("PublicAccessBlockConfiguration", {})
    off = [f for f in _PAB_FLAGS if not flags.get(f)]
    if off:
        return Verdict(False, f"bucket {store.bucket}: expected all of {', '.join(_PAB_FLAGS)} on, "
                              f"found off: {', '.join(off)}")
    return Verdict(True, f"bucket {store.bucket}: public access blocked ({', '.join(_PAB_FLAGS)})")


def bucket_policy(store) -> Verdict:
    status = _read(store, "GetBucketPolicyStatus")
    if status is None:
        return Verdict(True, f"bucket {store.bucket} has no bucket policy")
    if status.get("PolicyStatus", {}).get("IsPublic"):
        return Verdict(False, f"bucket {store.bucket}: expected a policy that grants nobody public access, "
                              f"found IsPublic=true (GetBucketPolicyStatus)")
    return Verdict(True, f"bucket {store.bucket}: its policy is not public")


def backup_count(catalog, min_backups: int) -> Verdict:
    result = check_backups(catalog, min_backups=min_backups)
    if result.problems:
        return Verdict(False, "; ".join(result.problems))
    return Verdict(True, f"{result.count} backups in {catalog.source}, newest {result.newest}")


def backup_age(catalog, max_age: float, *, now: datetime | None = None) -> Verdict:
    result = check_backups(catalog, min_backups=1, max_age=max_age, now=now)
    if result.problems:
        return Verdict(False, "; ".join(result.problems))
    from .._fmt import human_duration

    age = result.newest_age_seconds
    assert age is not None  # with max_age given, check_backups reports a missing age as a problem
    return Verdict(True, f"the newest backup {result.newest} finished {human_duration(age)} ago")


def wal_continuity_check(catalog) -> Verdict:
    runs = wal_continuity(catalog)
    if not runs:
        return Verdict(False, f"no WAL to check in {catalog.source} (no backup, or no archived segment)")
    missing = [r for r in runs if r.status == "MISSING"]
    if missing:
        shown = "; ".join(f"timeline {r.timeline}: {r.first}..{r.last} ({r.count} segments)" for r in missing[:5])
        return Verdict(False, f"WAL from the oldest backup to the newest segment has gaps: {shown}")
    total = sum(r.count for r in runs)
    return Verdict(True, f"{total} WAL segments continuous from backup {catalog.backups[0].name} "
                         f"to {runs[-1].last}")
