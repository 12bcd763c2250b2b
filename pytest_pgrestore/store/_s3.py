"""A backup store in an S3 bucket (AWS, MinIO, SeaweedFS, any plain-S3 endpoint).

Read-only by construction: the class has no write method, and the boto3 client it holds refuses,
before anything is sent, every operation that is not a read (see :data:`READ_OPERATIONS`).

Settings come from AWS-style environment variables, each resolved with where it came from
(:func:`s3_settings_from_env`).  Credentials follow the standard AWS chain; environment values are
passed to boto3 only when present.

Checked against SeaweedFS 4.x (``weed mini``): ListObjectsV2 and HeadObject both return ETag and
LastModified (list and head agree, also for multipart objects); ``Range: bytes=-N`` works and
returns the whole object when N exceeds its size, but a suffix range on an empty object is
refused with InvalidRange (416), as AWS does; ``If-Match`` with a stale ETag gives
PreconditionFailed (412).  A HEAD with a wrong secret gets a bare 403 (no body, so no error code).
Its ListObjectsV2 does *not* return S3's lexicographic order: it walks directories, so "a/c" comes
before "a-b" ("-" < "/"); :meth:`S3Store.list` sorts.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, TypeVar, cast

from ..errors import (
    AccessDenied,
    NotSupported,
    ObjectChanged,
    SourceError,
    SourceNotFound,
    SourceUnreachable,
    UsageError,
)
from ._base import ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.credentials import Credentials

    from ._s3_lean import LeanGet

log = logging.getLogger(__name__)

__all__ = ["S3Settings", "S3Store", "Sourced", "ObjectChanged", "NotSupported", "s3_settings_from_env",
           "READ_OPERATIONS", "BUCKET_SETTINGS"]

T = TypeVar("T")

#: the only S3 operations an S3Store's client will send
READ_OPERATIONS = frozenset({"ListObjectsV2", "HeadObject", "GetObject", "HeadBucket", "GetBucketLocation",
                             "GetBucketEncryption", "GetPublicAccessBlock", "GetBucketPolicyStatus"})
#: bucket-level reads of the hygiene checks → the error code that means "not configured"
BUCKET_SETTINGS = {
    "GetBucketEncryption": "ServerSideEncryptionConfigurationNotFoundError",
    "GetPublicAccessBlock": "NoSuchPublicAccessBlockConfiguration",
    "GetBucketPolicyStatus": "NoSuchBucketPolicy",
}

_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")  # last: WAL-G's name
_REGION_VARS = ("AWS_DEFAULT_REGION", "AWS_REGION")  # AWS_REGION: WAL-G's name, unknown to botocore
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Sourced(Generic[T]):
    """A setting's value and where it came from (``"env AWS_ENDPOINT_URL"``, ``"default"``)."""

    value: T
    source: str

    def __str__(self) -> str:
        return f"{self.value} (from {self.source})"


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3, resolved from the environment.  ``repr`` never shows credentials."""

    endpoint_url: Sourced[str | None]
    region: Sourced[str | None]  # None: left to the AWS profile, else us-east-1
    path_style: Sourced[bool]
    ca_bundle: Sourced[str | None]
    profile: Sourced[str | None]
    credentials_source: str = "AWS default chain"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def s3_settings_from_env(env: Mapping[str, str] | None = None) -> S3Settings:
    """Resolve :class:`S3Settings` from AWS-style variables (``os.environ`` by default).

    Raises :class:`~pytest_pgrestore.errors.UsageError` naming the variable for a malformed value.
    """
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    endpoint: Sourced[str | None] = Sourced(None, "AWS default for the region")
    for name in _ENDPOINT_VARS:
        if url := get(name):
            if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
                # S3 signs with access keys; user:password@ in the URL is a secret that would be
                # printed with every message naming the endpoint, so nothing of it is echoed
                raise UsageError(
                    f"the S3 endpoint in env {name} carries credentials (user:password@); they are not shown here",
                    checked=f"the authority of {name}",
                    fix=f"remove them from {name} and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
                )
            if not url.startswith(("http://", "https://")):
                raise UsageError(
                    f"S3 endpoint {url!r} from env {name} is not a URL",
                    fix=f"set {name} to http://host:port or https://host[:port]",
                )
            endpoint = Sourced(url.rstrip("/"), f"env {name}")
            break

    region: Sourced[str | None] = Sourced(None, f"AWS profile, else {DEFAULT_REGION}")
    for name in _REGION_VARS:
        if value := get(name):
            region = Sourced(value, f"env {name}")
            break

    if (raw := get("AWS_S3_FORCE_PATH_STYLE")) is not None:
        path_style = Sourced(_parse_bool(raw, "AWS_S3_FORCE_PATH_STYLE"), "env AWS_S3_FORCE_PATH_STYLE")
    elif endpoint.value is not None:
        path_style = Sourced(True, f"custom endpoint ({endpoint.source})")
    else:
        path_style = Sourced(False, "default (virtual-hosted when the bucket name allows)")

    ca_bundle = get("AWS_CA_BUNDLE")
    profile = get("AWS_PROFILE")
    key_id, secret = get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
    if (key_id is None) != (secret is None):
        have, missing = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")[:: 1 if key_id else -1]
        raise UsageError(
            f"env {have} is set but {missing} is not",
            fix=f"set {missing} too, or unset {have} to use AWS_PROFILE or another credential source",
        )
    return S3Settings(
        endpoint_url=endpoint,
        region=region,
        path_style=path_style,
        ca_bundle=Sourced(ca_bundle, "env AWS_CA_BUNDLE" if ca_bundle else "system CA store"),
        profile=Sourced(profile, "env AWS_PROFILE" if profile else "default"),
        credentials_source="env AWS_ACCESS_KEY_ID" if key_id else "AWS default chain",
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=get("AWS_SESSION_TOKEN") if key_id else None,
    )


def _parse_bool(raw: str, name: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise UsageError(f"env {name}={raw!r} is not a boolean", fix=f"set {name} to true or false")


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; keys are relative to the prefix."""

    remote = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        env: Mapping[str, str] | None = None,
        settings: S3Settings | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise UsageError(f"bad S3 bucket name {bucket!r}", fix="write the source as s3://bucket/prefix")
        from botocore.exceptions import BotoCoreError, ClientError

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.settings = settings if settings is not None else s3_settings_from_env(env)
        self._client, self._region, self._key_hint, self._credentials = _make_client(self.settings)
        self._lean_get: LeanGet | None = None  # made on the first GET (:mod:`.s3_lean`)
        self._boto_errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError)
        self.endpoint: str = self._client.meta.endpoint_url
        self.description = f"s3://{bucket}/{self.prefix.rstrip('/')} (endpoint {self.endpoint})"

    def __repr__(self) -> str:
        return f"S3Store({self.description!r})"

    def parent(self, levels: int) -> tuple[S3Store, str]:
        parts = self.prefix.strip("/").split("/")
        if not self.prefix or len(parts) < levels:
            raise SourceNotFound(f"{self.description} has no parent folder {levels} levels up",
                                 checked=f"the prefix {self.prefix or '(none)'!r}",
                                 fix="point the source at the repository root")
        return S3Store(self.bucket, "/".join(parts[:-levels]), settings=self.settings), parts[-1]

    def close(self) -> None:
        if self._lean_get is not None:
            self._lean_get.close()
        self._client.close()

    def config_summary(self) -> dict[str, Any]:
        """What the store connects with and where each value came from; never a secret."""
        s = self.settings
        return {
            "endpoint": self.endpoint,
            "endpoint_source": s.endpoint_url.source,
            "region": self._region.value,
            "region_source": self._region.source,
            "path_style": s.path_style.value,
            "path_style_source": s.path_style.source,
            "ca_bundle": s.ca_bundle.value,
            "ca_bundle_source": s.ca_bundle.source,
            "profile": s.profile.value,
            "credentials_source": s.credentials_source,
        }

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in key order; folder markers (keys ending in ``/``) are skipped.

        The listing is fetched in full before the first item: S3 promises key order, but some
        servers (SeaweedFS) return directory-walk order ("a/c" before "a-b"), so we sort.
        """
        full = self.prefix + prefix
        paginator = self._client.get_paginator("list_objects_v2")
        infos = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", ()):
                    if not obj["Key"].endswith("/"):
                        infos.append(_info(obj["Key"][len(self.prefix) :], obj, obj["Size"]))
        except self._boto_errors as exc:
            raise self._error(exc, "ListObjectsV2", full) from exc
        infos.sort(key=lambda info: info.key)  # timsort: linear when the server already sorted
        return iter(infos)

    def stat(self, key: str) -> ObjectInfo | None:
        full = self.prefix + key
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full)  # type: ignore[attr-defined]  # botocore makes operations at runtime
        except self._boto_errors as exc:
            if _http_status(exc) == 404:
                return None
            raise self._error(exc, "HeadObject", full) from exc
        return _info(key, head, head["ContentLength"])

    def open(self, key: str) -> BinaryIO:
        return self._get(key, {}, partial=False)

    def object_encryption(self, key: str) -> str | None:
        """The server-side encryption a HEAD of ``key`` reports (AES256, aws:kms, …), None when none."""
        full = self.prefix + key
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=full)  # type: ignore[attr-defined]  # botocore makes operations at runtime
        except self._boto_errors as exc:
            raise self._error(exc, "HeadObject", full) from exc
        return head.get("ServerSideEncryption")

    def bucket_setting(self, operation: str) -> dict[str, Any] | None:
        """A bucket-level read (:data:`BUCKET_SETTINGS`); None when the bucket has no such setting.

        Raises :class:`NotSupported` when the endpoint does not implement it, AccessDenied when the
        key may not read it.
        """
        method = getattr(self._client, _snake(operation))
        try:
            response = method(Bucket=self.bucket)
        except self._boto_errors as exc:
            code = _error_code(exc)
            if code == BUCKET_SETTINGS[operation]:
                return None
            if code in ("NotImplemented", "501", "MethodNotAllowed"):
                raise NotSupported(f"S3 endpoint {self.endpoint} does not implement {operation} ({code})",
                                   checked=f"{operation} on bucket {self.bucket}") from exc
            raise self._error(exc, operation, "") from exc
        response.pop("ResponseMetadata", None)
        return response

    def open_range(self, key: str, start: int, end: int | None = None, etag: str | None = None) -> BinaryIO:
        """Bytes ``start`` up to ``end`` (exclusive, like a slice; ``None`` = to the end).

        With ``etag`` (as :meth:`stat` or :meth:`list` report it) the read fails with
        :class:`ObjectChanged` unless the object still has that ETag, so a resumed download never
        splices two versions of an object.
        """
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad range start={start} end={end}")
        extra = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        if etag is not None:
            extra["IfMatch"] = etag if etag.startswith(('"', "W/")) else f'"{etag}"'
        return self._get(key, extra, partial=start > 0 or end is not None)

    def open_part(self, key: str, start: int, end: int | None,
                  etag: str | None = None) -> tuple[BinaryIO, int | None, str | None]:
        """Bytes ``start`` up to ``end`` (exclusive; None: to the object's end) and what the
        response tells of the whole object: ``(stream, total size, ETag)``.  The first GET of an
        object learns its size and version from it; ``etag`` guards the later parts (``If-Match``).

        An empty object (S3 refuses any range of it) comes back whole, with its size.
        """
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"bad range start={start} end={end}")
        full = self.prefix + key
        extra = {"Range": f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"}
        if etag is not None:
            extra["IfMatch"] = etag if etag.startswith(('"', "W/")) else f'"{etag}"'
        try:
            resp = self._get_object(full, extra, partial=True)
        except SourceError as exc:
            if start == 0 and _error_code(exc.__cause__) == "InvalidRange":
                whole = self._get(key, {k: v for k, v in extra.items() if k == "IfMatch"}, partial=False)
                return whole, 0, etag
            raise
        total = _total_of(resp.get("ContentRange"))
        tag = extra.get("IfMatch") or resp.get("ETag")
        reader = _BodyReader(resp["Body"], self, full, start=start, end=end, etag=tag,
                             size=resp.get("ContentLength"))
        # unbuffered: the fetch layer reads it with readinto, as much as a part holds
        return cast(BinaryIO, reader), total, tag

    def read_tail(self, key: str, nbytes: int) -> bytes:
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes == 0:
            return b""
        full = self.prefix + key
        try:
            resp = self._client.get_object(  # type: ignore[attr-defined]  # botocore makes operations at runtime
                Bucket=self.bucket, Key=full, Range=f"bytes=-{nbytes}")
            with resp["Body"] as body:
                data = body.read()
        except self._boto_errors as exc:
            if _error_code(exc) == "InvalidRange" and (info := self.stat(key)) is not None and info.size == 0:
                return b""  # S3 refuses a suffix range on an empty object
            raise self._error(exc, "GetObject", full) from exc
        return data[-nbytes:]  # an endpoint that ignores Range sends the whole object

    # -- helpers -------------------------------------------------------------------------------

    def _get(self, key: str, extra: dict[str, str], *, partial: bool) -> BinaryIO:
        full = self.prefix + key
        resp = self._get_object(full, extra, partial=partial)
        start, end = _range_of(extra.get("Range"))
        etag = extra.get("IfMatch") or resp.get("ETag")
        reader = _BodyReader(
            resp["Body"], self, full, start=start, end=end, etag=etag, size=resp.get("ContentLength")
        )
        return io.BufferedReader(reader, buffer_size=1 << 20)

    def _get_object(self, full: str, extra: dict[str, str], *, partial: bool) -> dict[str, Any]:
        resp = self._lean().get(full, extra)  # a third of the client's CPU; None: ask the client
        if resp is not None:
            return resp
        try:
            resp = self._client.get_object(  # type: ignore[attr-defined]  # botocore makes operations at runtime
                Bucket=self.bucket, Key=full, **extra)
        except self._boto_errors as exc:
            raise self._error(exc, "GetObject", full) from exc
        if partial and "ContentRange" not in resp:
            resp["Body"].close()
            raise SourceError(
                f"endpoint {self.endpoint} ignored the Range header reading s3://{self.bucket}/{full}",
                checked=f"GetObject with Range {extra['Range']} returned the whole object",
                fix="use an S3 endpoint that supports ranged GET (AWS, MinIO and SeaweedFS do)",
            )
        return resp

    def _error(self, exc: BaseException, operation: str, key: str) -> SourceError:
        return _map_error(exc, self, operation, key)

    def _lean(self):
        if self._lean_get is None:
            from ._s3_lean import LeanGet

            with _LEAN_LOCK:
                if self._lean_get is None:
                    self._lean_get = LeanGet(self._client, self._credentials, self.bucket,
                                             verify=self.settings.ca_bundle.value)
        return self._lean_get


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw stream that survives a dropped connection.

    When the body breaks off mid-stream (connection reset, truncated transfer, read timeout),
    the rest is fetched with a ranged GET from the first byte not yet delivered, guarded by
    ``If-Match`` on the ETag of the first response: the bytes handed out are those of one
    version of the object or the read fails with :class:`ObjectChanged`.  Formats never see
    the resume.  Other failures become one of our errors.
    """

    def __init__(
        self,
        body: Any,
        store: S3Store,
        key: str,
        *,
        start: int,
        end: int | None,
        etag: str | None,
        size: int | None,
    ) -> None:
        self._body = body
        self._store = store
        self._key = key
        self._pos = start  # offset in the object of the next byte to hand out
        self._range_end = end  # exclusive end the caller asked for; None: to the end of the object
        self._end = start + size if size is not None else end  # where the body ends, when known
        self._etag = etag
        self.resumes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._end is not None and self._pos >= self._end or not len(buffer):
            return 0
        while True:
            try:
                data = self._body.read(len(buffer))
                break
            except (*self._store._boto_errors, *_stream_errors()) as exc:
                self._resume(exc)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _resume(self, exc: BaseException) -> None:
        where = f"s3://{self._store.bucket}/{self._key}"
        if self.resumes >= MAX_RESUMES or self._etag is None or not _is_transient(exc):
            raise self._store._error(exc, "GetObject", self._key) from exc
        self.resumes += 1
        log.warning(
            "reading %s broke off at byte %d (%s); resuming with a ranged GET, attempt %d of %d",
            where,
            self._pos,
            type(exc).__name__,
            self.resumes,
            MAX_RESUMES,
        )
        with contextlib.suppress(Exception):
            self._body.close()
        end = "" if self._range_end is None else self._range_end - 1
        extra = {"Range": f"bytes={self._pos}-{end}", "IfMatch": self._etag}
        try:
            self._body = self._store._get_object(self._key, extra, partial=True)["Body"]
        except ObjectChanged as changed:
            raise ObjectChanged(
                f"object {where} changed during download: it no longer has ETag {self._etag} "
                f"(resuming at byte {self._pos} after {type(exc).__name__})",
                checked="GetObject with If-Match on the ETag of the first response",
                fix="something rewrote the backup while the drill read it; re-run the drill once its writers "
                "have finished",
            ) from changed

    def readall(self) -> bytes:  # RawIOBase's default reads 8 KiB at a time
        chunks = []
        while chunk := self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


_LEAN_LOCK = threading.Lock()

#: ranged GETs one read may make after its connection broke off
MAX_RESUMES = 5


def _stream_errors() -> tuple[type[BaseException], ...]:
    from urllib3.exceptions import HTTPError

    return (OSError, HTTPError, http.client.HTTPException)


def _is_transient(exc: BaseException) -> bool:
    """A broken transfer (worth a resume), not a refusal by the server."""
    from botocore import exceptions as bx

    return not isinstance(exc, bx.ClientError) and not isinstance(exc, (bx.NoCredentialsError, bx.SSLError))


def _total_of(content_range: str | None) -> int | None:
    """``bytes 0-99/2048`` → 2048 (``*``: unknown)."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _range_of(header: str | None) -> tuple[int, int | None]:
    """``bytes=10-19`` → (10, 20); no header → (0, None)."""
    if not header:
        return 0, None
    first, _, last = header.removeprefix("bytes=").partition("-")
    return int(first), int(last) + 1 if last else None


def _make_client(settings: S3Settings) -> tuple[BaseClient, Sourced[str], str | None, Credentials | None]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ProfileNotFound

    kwargs: dict[str, str] = {}
    if settings.profile.value:
        kwargs["profile_name"] = settings.profile.value
    if settings.access_key_id:
        kwargs["aws_access_key_id"] = settings.access_key_id
        kwargs["aws_secret_access_key"] = settings.secret_access_key or ""
        if settings.session_token:
            kwargs["aws_session_token"] = settings.session_token
    try:
        session = boto3.session.Session(**kwargs)  # type: ignore[arg-type]  # boto3-stubs: str keywords, typed one by one
    except ProfileNotFound as exc:
        raise UsageError(
            f"AWS profile {settings.profile.value!r} ({settings.profile.source}) does not exist",
            checked=f"{_config_files()}",
            fix="fix AWS_PROFILE or add the profile to the config file",
        ) from exc

    region: Sourced[str]
    if settings.region.value:
        region = Sourced(settings.region.value, settings.region.source)
    elif session.region_name:
        region = Sourced(session.region_name, "AWS profile / botocore config")
    else:
        region = Sourced(DEFAULT_REGION, "default")
    ca = settings.ca_bundle.value
    if ca is not None and not os.path.isfile(ca):
        raise UsageError(
            f"CA bundle {ca} ({settings.ca_bundle.source}) is not a file",
            fix="point AWS_CA_BUNDLE at a PEM file holding the CA certificate of the endpoint",
        )
    config = Config(
        region_name=region.value,
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.path_style.value else "auto"},
        retries={"mode": "standard", "max_attempts": 3},  # backoff totals under ~3 s
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
        tcp_keepalive=True,
    )
    client = session.client("s3", endpoint_url=settings.endpoint_url.value, verify=ca, config=config)
    client.meta.events.register("before-parameter-build.s3", _refuse_writes)
    try:
        creds = session.get_credentials()
    except BotoCoreError:  # the first request raises it again, and maps it with its context
        creds = None
    # the first 4 characters identify which key was used without revealing it
    key_hint = creds.access_key[:4] if creds is not None and creds.access_key else None
    return client, region, key_hint, creds


def _refuse_writes(model: Any, **_: Any) -> None:
    if model.name not in READ_OPERATIONS:
        raise PermissionError(f"pytest-pgrestore never writes to a backup store: S3 {model.name} refused")


def _info(key: str, obj: Mapping[str, Any], size: int) -> ObjectInfo:
    etag = obj.get("ETag")
    return ObjectInfo(
        key=key,
        size=size,
        last_modified=obj["LastModified"].astimezone(timezone.utc),
        etag=etag.strip('"') if etag else None,
    )


# -- error mapping ----------------------------------------------------------------------------

_IAM_ACTION = {"ListObjectsV2": "s3:ListBucket", "HeadObject": "s3:GetObject", "GetObject": "s3:GetObject",
               "GetBucketEncryption": "s3:GetEncryptionConfiguration",
               "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
               "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus"}
_BUCKET_ACTIONS = ("s3:ListBucket", "s3:GetEncryptionConfiguration", "s3:GetBucketPublicAccessBlock",
                   "s3:GetBucketPolicyStatus")


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


@dataclass(frozen=True)
class _Rule:
    """One row of :data:`_ERRORS`: our error class and its three parts as ``str.format`` templates.

    The fields a template may use are those :func:`_map_error` fills: ``where`` (s3://bucket/key),
    ``endpoint`` (with where its URL came from), ``bare_endpoint``, ``bucket``, ``operation``,
    ``code``, ``status``, ``identity`` (the access key hint and the credentials' source),
    ``region``, ``region_source``, ``bucket_region``, ``exc_type``, ``detail`` (code and message),
    ``ca_bundle`` and ``credential_places``.
    """

    error: type[SourceError]
    what: str
    checked: str
    fix: str | None = None


_SIGNED_WITH = "{operation} on {where} with {identity}"
_NOT_FOUND_BUCKET = _Rule(SourceNotFound, "bucket {bucket!r} does not exist at S3 endpoint {endpoint}",
                          "{operation} on {where}",
                          "check the bucket name in the source URL and the endpoint variables (AWS_ENDPOINT_URL...)")
_NOT_FOUND_KEY = _Rule(SourceNotFound, "object {where} does not exist (endpoint {bare_endpoint})", "{operation}",
                       "list the source to see which objects the backup holds")
_TOKEN = _Rule(AccessDenied, "S3 endpoint {endpoint} rejected the session token ({code})", _SIGNED_WITH,
               "refresh the temporary credentials (AWS_SESSION_TOKEN, SSO login) and re-run")
_CHANGED = _Rule(ObjectChanged, "{where} changed while it was being read",
                 "GetObject with If-Match on the ETag seen when the read began",
                 "something is rewriting the backup; re-run the drill once its writers have finished")
_REGION = _Rule(SourceError, "bucket {bucket!r} is not in region {region} ({region_source})",
                "{operation} on {where} at {endpoint}", "set AWS_DEFAULT_REGION to {bucket_region}")
#: ``_access_denied`` builds these: the IAM action and resource refused depend on the operation.
_REFUSED = "(refused)"

#: S3 error code (or a pseudo-code of :data:`_NO_ANSWER`, ``5xx``, ``*``) -> our error.
_ERRORS: dict[str, _Rule | str] = {
    "(no credentials)": _Rule(
        AccessDenied, "no AWS credentials found to read {where}", "{credential_places}",
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile with keys"),
    "(TLS)": _Rule(
        SourceUnreachable, "TLS handshake with S3 endpoint {endpoint} failed", "certificate against {ca_bundle}",
        "set AWS_CA_BUNDLE to the PEM file of the CA that signed the endpoint's certificate"),
    "(no connection)": _Rule(
        SourceUnreachable, "cannot connect to S3 endpoint {endpoint}",
        "{operation} on {where}, 3 attempts, connect timeout 5 s",
        "check the endpoint URL (AWS_ENDPOINT_URL) and that the server is up and reachable from here"),
    "(connection lost)": _Rule(
        SourceUnreachable, "connection to S3 endpoint {endpoint} failed during {operation} on {where}: {exc_type}",
        "read timeout 60 s", "check the network and the server's health; re-run the drill"),
    "NoSuchBucket": _NOT_FOUND_BUCKET,
    "NoSuchKey": _NOT_FOUND_KEY,
    "404": _NOT_FOUND_KEY,
    "InvalidAccessKeyId": _Rule(
        AccessDenied, "S3 endpoint {endpoint} does not know the access key id: credentials are wrong", _SIGNED_WITH,
        "use an access key id issued for this endpoint (AWS_ACCESS_KEY_ID or the profile's)"),
    "SignatureDoesNotMatch": _Rule(
        AccessDenied, "S3 endpoint {endpoint} rejected the request signature: the secret key is wrong", _SIGNED_WITH,
        "set the secret that belongs to this access key id (AWS_SECRET_ACCESS_KEY or the profile's)"),
    "ExpiredToken": _TOKEN,
    "TokenRefreshRequired": _TOKEN,
    "InvalidToken": _TOKEN,
    "AccessDenied": _REFUSED,
    "403": _REFUSED,
    "AllAccessDisabled": _REFUSED,
    "PreconditionFailed": _CHANGED,
    "412": _CHANGED,
    "PermanentRedirect": _REGION,
    "AuthorizationHeaderMalformed": _REGION,
    "301": _REGION,
    "IllegalLocationConstraintException": _REGION,
    "5xx": _Rule(SourceUnreachable, "S3 endpoint {endpoint} answered {status} {code} to {operation} on {where}",
                 "3 attempts with backoff", "check the server's health and logs; re-run the drill"),
    "*": _Rule(SourceError, "{operation} on {where} failed: {detail}", "endpoint {endpoint}"),
}


def _no_answer(exc: BaseException) -> str | None:
    """The pseudo-code in :data:`_ERRORS` of a failure that never reached an S3 answer (first match
    wins: botocore's SSLError is also a ConnectionError); None for an S3 error response."""
    from botocore import exceptions as bx

    kinds: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
        ((bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError), "(no credentials)"),
        ((bx.SSLError,), "(TLS)"),
        ((bx.ConnectionError,), "(no connection)"),
        ((bx.HTTPClientError, bx.IncompleteReadError, OSError), "(connection lost)"),
    )
    return next((pseudo for classes, pseudo in kinds if isinstance(exc, classes)), None)


class _Fields(dict):
    """The fields of a :class:`_Rule`'s templates, each computed when a template uses it."""

    def __getitem__(self, name: str) -> Any:
        return super().__getitem__(name)()


def _map_error(exc: BaseException, store: S3Store, operation: str, key: str) -> SourceError:
    """Our error for a botocore failure: what failed, what was checked, how to fix; no secret.

    The row of :data:`_ERRORS` for the failure (its pseudo-code if S3 never answered, else the
    error code S3 answered), else ``5xx`` for a server error, else ``*``.
    """
    code = _no_answer(exc)
    status = None
    if code is None:
        code, status = _error_code(exc) or "?", _http_status(exc)
    rule = _ERRORS.get(code) or _ERRORS["5xx" if status is not None and status >= 500 else "*"]

    def identity() -> str:
        hint = f"access key id {store._key_hint}..." if store._key_hint else "no access key id"
        return f"{hint} ({store.settings.credentials_source})"

    if isinstance(rule, str):  # _REFUSED
        return _access_denied(store, operation, key, identity(), bare=code == "403")
    response = lambda: getattr(exc, "response", {})  # noqa: E731
    fields = _Fields(
        where=lambda: f"s3://{store.bucket}/{key}",
        endpoint=lambda: f"{store.endpoint} ({store.settings.endpoint_url.source})",
        bare_endpoint=lambda: store.endpoint,
        bucket=lambda: store.bucket,
        operation=lambda: operation,
        code=lambda: code,
        status=lambda: status,
        identity=identity,
        region=lambda: store._region.value,
        region_source=lambda: store._region.source,
        bucket_region=lambda: response().get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(
            "x-amz-bucket-region", "the bucket's region"),
        exc_type=lambda: type(exc).__name__,
        detail=lambda: f"{code} {response().get('Error', {}).get('Message', '')}".rstrip(),
        ca_bundle=lambda: store.settings.ca_bundle,
        credential_places=_credential_places,
    )
    return rule.error(rule.what.format_map(fields), checked=rule.checked.format_map(fields),
                      fix=rule.fix.format_map(fields) if rule.fix else None)


def _access_denied(store: S3Store, operation: str, key: str, identity: str, *, bare: bool) -> AccessDenied:
    action = _IAM_ACTION.get(operation, f"s3:{operation}")
    resource = (
        f"arn:aws:s3:::{store.bucket}" if action in _BUCKET_ACTIONS else f"arn:aws:s3:::{store.bucket}/{key}"
    )
    what = f"S3 endpoint {store.endpoint} refused {action} on {resource}"
    if action == "s3:ListBucket":
        what += f" (prefix {key!r})"
    if bare:  # a HEAD answer has no body, so no error code to tell a bad key from a missing grant
        what += " (403 without details: the credentials may also be wrong)"
    err = AccessDenied(
        what,
        checked=f"{operation} on s3://{store.bucket}/{key} with {identity}",
        fix=f"grant {action} on {resource} to these credentials (IAM user/role policy or bucket policy); "
        "a restore drill needs s3:ListBucket on the bucket and s3:GetObject on the backup's objects",
    )
    err.permission, err.resource = action, resource  # what a check that was refused names when it skips
    return err


def _credential_places() -> str:
    env = os.environ
    imds = (
        "disabled by AWS_EC2_METADATA_DISABLED"
        if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true"
        else "tried"
    )
    return (
        "env AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; "
        f"profile {env.get('AWS_PROFILE', 'default')!r} in {_config_files()} (keys, SSO, credential_process); "
        "container credentials (AWS_CONTAINER_CREDENTIALS_*); "
        f"EC2 instance metadata ({imds})"
    )


def _config_files() -> str:
    creds = os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
    config = os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")
    return f"{creds} and {config}"


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _error_code(exc: BaseException | None) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None
