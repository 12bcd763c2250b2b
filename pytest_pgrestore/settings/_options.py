"""Resolve settings and remember where each came from (pure: no pytest, no network).

Precedence, highest first: keyword overrides (marker / fixture factory) > CLI > env > ini >
WAL-G's own variables (source, fetch concurrency) > default.  Each layer is consulted with
``is None``, so an empty ``--restore-target=`` is a value (and an error), never a silent
fall-through.  Two layers
treat ``""`` as unset on purpose: an empty environment variable (``PGRESTORE_SOURCE= pytest`` is
how a shell unsets for one command) and an empty ini value (pytest's ``getini`` cannot tell an
absent string key from an empty one).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from .._fmt import option_duration, redact_userinfo
from ..errors import NoSourceConfigured, UsageError
from ._target import RestoreTarget

__all__ = [
    "OPTIONS",
    "WALG_CONCURRENCY_VAR",
    "WALG_SOURCE_VARS",
    "OptionSpec",
    "Settings",
    "Source",
    "SourceIdentity",
    "parse_duration",
    "parse_source",
    "resolve_settings",
    "source_identity",
]

#: WAL-G's (and WAL-E's) own variables, consulted for the source after every layer of ours.
WALG_SOURCE_VARS = ("WALG_S3_PREFIX", "WALE_S3_PREFIX", "WALG_FILE_PREFIX")
#: WAL-G's own variable, consulted for --restore-fetch-concurrency after every layer of ours.
WALG_CONCURRENCY_VAR = "WALG_DOWNLOAD_CONCURRENCY"
SOURCE_SYNTAX = "s3://BUCKET[/PREFIX], file:///ABS/PATH or /ABS/PATH, optionally ?stanza=NAME or ?server=NAME"
DURATION_SYNTAX = "whole seconds (90) or units d, h, m, s in that order (2d, 1h30m, 90s)"
_SELECTOR_KEYS = ("stanza", "server")  # pgBackRest stanza, barman server
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")  # S3 rules, loosely (legacy caps, _)
_SELECTOR_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DURATION = re.compile(r"(?:([0-9]+)d)?\s*(?:([0-9]+)h)?\s*(?:([0-9]+)m)?\s*(?:([0-9]+)s)?")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _usage(what: str, origin: str, accepted: str, fix: str) -> UsageError:
    return UsageError(f"{what} (from {origin})", checked=f"accepted: {accepted}", fix=fix)


def parse_duration(text: str, *, origin: str) -> float:
    """``"1h30m"`` → ``5400.0``; a bare integer is seconds."""
    stripped = text.strip()
    match = _DURATION.fullmatch(stripped)
    if stripped.isascii() and stripped.isdigit():
        seconds = int(stripped)
    elif stripped and match:
        seconds = sum(int(count or 0) * size for count, (_, size) in zip(match.groups(), _UNITS, strict=True))
    else:
        raise _usage(f"invalid duration {text!r}", origin, DURATION_SYNTAX, "e.g. 6h, 45m or 1h30m")
    if seconds <= 0:
        raise _usage(f"invalid duration {text!r}: it must be positive", origin, DURATION_SYNTAX, "e.g. 6h")
    return float(seconds)


@dataclass(frozen=True)
class Source:
    """Where the backups live.  ``describe()`` is safe to print: credentials are refused outright."""

    scheme: str  # "s3" | "file"
    bucket: str | None = None
    prefix: str = ""  # no leading or trailing "/"
    path: Path | None = None
    selector: dict[str, str] = field(default_factory=dict, hash=False)  # {"stanza": …} or {"server": …}
    raw: str = field(default="", compare=False)

    def describe(self) -> str:
        if self.scheme == "s3":
            url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        else:
            url = "file://" + quote(str(self.path))
        return url + "".join(f"?{key}={value}" for key, value in self.selector.items())

    def __str__(self) -> str:
        return self.describe()


def parse_source(text: str, *, origin: str) -> Source:
    """Parse a source URL.  Messages echo only pieces known to hold no secret."""
    raw = text.strip()
    if not raw:
        raise _source_error("it is empty", origin, "e.g. s3://my-backups/pg/main")
    scheme, sep, rest = raw.partition("://")
    if raw.startswith("/"):
        return _file_source(raw, raw, origin)
    if not sep:
        if raw.lower().startswith("file:/"):  # RFC 8089's one-slash form, file:/abs/path
            return _file_source(raw[5:], raw, origin)
        if raw.lower().startswith("s3:"):
            hint = "an S3 URL takes two slashes: s3://BUCKET/PREFIX"
        elif raw.startswith("~"):
            hint = "~ is not expanded; spell out the home directory"
        else:
            hint = "use an absolute path (/var/backups/pg) or file:///var/backups/pg"
        raise _source_error("it is neither a URL nor an absolute path", origin, hint)
    scheme = scheme.lower()  # schemes are case-insensitive (RFC 3986)
    if scheme == "s3":
        return _s3_source(rest, raw, origin)
    if scheme == "file":
        return _file_url_source(rest, raw, origin)
    raise _unsupported_scheme(scheme, origin)


class SourceIdentity(NamedTuple):
    """One source's canonical identity, shared by the evidence record, the catalog and the gate:
    ``base`` is the store (``s3://BUCKET/PREFIX`` — no leading, trailing or doubled ``/`` in the
    prefix — or ``file://`` + the absolute, normalised, %-quoted path) and ``selector`` the
    ``stanza=NAME`` / ``server=NAME`` in use ("" when none was named nor resolved)."""

    base: str
    selector: str = ""

    @property
    def text(self) -> str:
        return self.base + (f"?{self.selector}" if self.selector else "")

    def __str__(self) -> str:
        return self.text


def source_identity(source: str | Source, *, origin: str = "source") -> SourceIdentity:
    """The canonical identity of a source URL or path (see :class:`SourceIdentity`):
    ``s3://b//p/``, ``s3://b/p`` and ``s3://b/p/`` are one source; so are ``/srv/a b``,
    ``file:/srv/a b/`` and ``file:///srv/a%20b``.  A malformed one raises :class:`UsageError`."""
    src = source if isinstance(source, Source) else parse_source(source, origin=origin)
    if src.scheme == "s3":
        prefix = "/".join(part for part in src.prefix.split("/") if part)
        base = f"s3://{src.bucket}" + (f"/{prefix}" if prefix else "")
    else:
        base = dataclasses.replace(src, selector={}).describe()
    return SourceIdentity(base, "".join(f"{key}={value}" for key, value in src.selector.items()))


def _source_error(problem: str, origin: str, fix: str) -> UsageError:
    return _usage(f"invalid restore source: {problem}", origin, SOURCE_SYNTAX, fix)


def _unsupported_scheme(scheme: str, origin: str) -> UsageError:
    shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) else "this scheme"
    if scheme in ("s3a", "s3n"):
        fix = "write s3://BUCKET/PREFIX"
    elif scheme in ("http", "https"):
        fix = "write s3://BUCKET/PREFIX and put the endpoint in AWS_ENDPOINT_URL"
    else:
        fix = "copy the backups to S3 or a local directory, or mount the store"
    return _usage(
        f"invalid restore source: {shown}:// is not supported (supported: s3://, file://)",
        origin,
        SOURCE_SYNTAX,
        fix,
    )


def _split_query(text: str, origin: str) -> tuple[str, dict[str, str]]:
    body, _, query = text.partition("?")
    if "#" in query or "#" in body:
        raise _source_error("a #fragment has no meaning here", origin, "remove everything from #")
    selector: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in _SELECTOR_KEYS:
            raise _source_error(
                f"unknown query key {key!r}",
                origin,
                "the only query keys are stanza (pgBackRest) and server (barman)",
            )
        if key in selector or selector:
            raise _source_error("give one selector: ?stanza=NAME or ?server=NAME", origin, "keep only one")
        if not _SELECTOR_VALUE.fullmatch(value):
            raise _source_error(
                f"{key}= needs a name of letters, digits and . _ -", origin, f"e.g. ?{key}=main"
            )
        selector[key] = value
    return body, selector


def _s3_source(rest: str, raw: str, origin: str) -> Source:
    body = rest.partition("?")[0]
    authority = body.partition("/")[0]
    if "@" in authority or ("@" in body and ":" in authority):
        # A secret key may hold "/" or "@", so nothing of this URL is echoed.
        raise _source_error(
            "the s3:// URL carries credentials (user:password@); they are not shown here",
            origin,
            "remove them from the URL and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
        )
    if ":" in authority:
        raise _source_error(
            "an s3:// URL has no port", origin, "put the endpoint (with its port) in AWS_ENDPOINT_URL"
        )
    body, selector = _split_query(rest, origin)
    bucket, _, prefix = body.partition("/")
    if not bucket:
        raise _source_error("the bucket name is empty", origin, "write s3://BUCKET/PREFIX")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise _source_error(
            f"{bucket!r} is not a valid bucket name",
            origin,
            "3-63 letters, digits, . _ -; starts and ends alnum",
        )
    return Source("s3", bucket=bucket, prefix=prefix.strip("/"), selector=selector, raw=raw)


def _file_url_source(rest: str, raw: str, origin: str) -> Source:
    host, slash, path = rest.partition("/")
    if host.lower() not in ("", "localhost"):  # RFC 8089: localhost means this machine
        shown = f"file:///{host}/{path}" if re.fullmatch(r"[\w.-]+", host) else "file:///ABS/PATH"
        raise _source_error(
            "file:// URLs name no other host",
            origin,
            f"a local path takes three slashes: did you mean {shown}?",
        )
    return _file_source(slash + path, raw, origin, url=True)


def _file_source(text: str, raw: str, origin: str, *, url: bool = False) -> Source:
    body, selector = _split_query(text, origin)
    path = unquote(body) if url else body
    if not path.startswith("/"):
        raise _source_error(
            "the path is relative", origin, "use an absolute path, e.g. file:///var/backups/pg"
        )
    if "\0" in path:
        raise _source_error("the path holds a NUL byte", origin, "remove it")
    normalized = "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading "//"
    return Source("file", path=Path(normalized), selector=selector, raw=raw)


# --- option parsers: a string from CLI/env/ini, or a typed value from a keyword override -----------

Parser = Callable[[object, str], object]


def _parse_source(value: object, origin: str) -> Source:
    return value if isinstance(value, Source) else parse_source(_text(value, origin, "source"), origin=origin)


def _parse_target(value: object, origin: str) -> RestoreTarget:
    if isinstance(value, RestoreTarget):
        return value
    return RestoreTarget.parse(_text(value, origin, "restore target"), origin=origin)


def _text(value: object, origin: str, label: str) -> str:
    if not isinstance(value, str):
        raise _usage(
            f"invalid {label}: expected a string, got {type(value).__name__}", origin, "a string", "quote it"
        )
    return value.strip()


def _one_of(*choices: str) -> Parser:
    def parse(value: object, origin: str) -> str:
        text = _text(value, origin, "value")
        if text not in choices:
            fix = f"write {text.lower()}" if text.lower() in choices else f"pick one of {', '.join(choices)}"
            raise _usage(f"invalid value {text!r}", origin, " | ".join(choices), fix)
        return text

    return parse


def _parse_timeout(value: object, origin: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value > 0:
            return float(value)
        raise _usage(f"invalid duration {value!r}: it must be positive", origin, DURATION_SYNTAX, "e.g. 6h")
    return parse_duration(_text(value, origin, "duration"), origin=origin)


def _parse_pg_name(value: object, origin: str) -> str:
    text = _text(value, origin, "name")
    if not text or "\0" in text or len(text.encode()) > 63:  # NAMEDATALEN - 1
        raise _usage(f"invalid name {text!r}", origin, "1-63 bytes, no NUL", "e.g. postgres")
    return text


#: a library as shared_preload_libraries names it: a file name, $libdir/…, or a path; no list syntax
_LIBRARY = re.compile(r"[A-Za-z0-9_$][A-Za-z0-9_.$/+-]*")
PRELOAD_SYNTAX = "library names separated by commas (pg_stat_statements,auto_explain), or none"


def _parse_preload(value: object, origin: str) -> tuple[str, ...]:
    """``"pg_stat_statements, auto_explain"`` → both, in the order given, each once."""
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(map(str, value))
    text = _text(value, origin, "preload")
    if text.strip().lower() == "none":
        return ()
    names = [name.strip() for name in text.split(",")]
    bad = [name for name in names if not _LIBRARY.fullmatch(name)]
    if bad or not names:
        raise _usage(f"invalid preload library {bad[0] if bad else text!r}", origin, PRELOAD_SYNTAX,
                     "name each library as shared_preload_libraries does, e.g. pg_stat_statements")
    return tuple(dict.fromkeys(names))


def _parse_dir(value: object, origin: str) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _usage(f"invalid directory {value!r}", origin, "an absolute path", "e.g. /var/tmp/pgrestore")
    text = os.fspath(value).strip()
    if not text.startswith("/"):
        # Relative to what? The cwd differs between xdist workers and the CLI.
        raise _usage(
            f"invalid directory {text!r}: it is relative",
            origin,
            "an absolute path",
            "e.g. /var/tmp/pgrestore",
        )
    return Path(posixpath.normpath(text))


def _parse_timeline(value: object, origin: str) -> str:
    text = (
        str(value)
        if isinstance(value, int) and not isinstance(value, bool)
        else _text(value, origin, "timeline")
    )
    if text in ("latest", "current") or (re.fullmatch(r"[0-9]{1,10}", text) and 0 < int(text) < 1 << 32):
        return text if not text.isdigit() else str(int(text))
    raise _usage(
        f"invalid timeline {text!r}", origin, "latest | current | a timeline id >= 1", "e.g. latest or 2"
    )


def _parse_bool(value: object, origin: str) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value, origin, "boolean").strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _usage(f"invalid boolean {value!r}", origin, "/".join(_TRUE + _FALSE), "write true or false")


def _default_workdir() -> str:
    # Per uid: two users on one runner must not share (or fight over) a 0700 directory.
    return os.path.join(tempfile.gettempdir(), f"pgrestore-{os.getuid()}")


@dataclass(frozen=True)
class OptionSpec:
    """One setting, and every name it goes by."""

    name: str
    default: str | None  # parsed like any other layer, so defaults are validated too
    parser: Parser
    help: str
    choices: tuple[str, ...] = ()
    default_factory: Callable[[], str] | None = None  # for defaults computed at run time
    const: str | None = None  # the value of the flag given alone (--restore-checks means all)
    secret: bool = False  # never shown (report header, evidence): e.g. a webhook URL with its token

    @property
    def cli_flag(self) -> str:
        return "--restore-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return f"restore_{self.name}"

    @property
    def ini_key(self) -> str:
        return f"restore_{self.name}"

    @property
    def env_var(self) -> str:
        return f"PGRESTORE_{self.name.upper()}"

    def default_text(self) -> str | None:
        return self.default_factory() if self.default_factory else self.default


_FORMATS = ("auto", "basebackup", "walg", "pgbackrest", "barman")
_RUNTIMES = ("local", "docker", "auto")
_KEEP = ("never", "on-failure", "always")
_DOCKER_NETWORKS = ("bridge", "host")
_DOCKER_MODES = ("auto", "bind", "copy")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@{}-]*")


def _parse_image(value: object, origin: str) -> str:
    """A docker image reference; ``{major}`` stands for the backup's PostgreSQL major version."""
    text = _text(value, origin, "image")
    fields = set(re.findall(r"{([^{}]*)}", text))
    if not _IMAGE.fullmatch(text) or fields - {"major"} or text.count("{") != text.count("}"):
        raise _usage(f"invalid image {text!r}", origin, "an image reference; {major} is the only placeholder",
                     "e.g. postgres:{major} or registry.example.com/pg:{major}-alpine")
    return text

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("source", None, _parse_source, f"where the backups live: {SOURCE_SYNTAX}"),
    OptionSpec(
        "target",
        "latest",
        _parse_target,
        "where recovery stops: latest, immediate, oldest, "
        "backup:NAME, an RFC 3339 time, lsn:X/Y, xid:N or name:POINT",
    ),
    OptionSpec("format", "auto", _one_of(*_FORMATS), "backup layout under the source", _FORMATS),
    OptionSpec("runtime", "local", _one_of(*_RUNTIMES), "how the restored server runs", _RUNTIMES),
    OptionSpec("dbname", "postgres", _parse_pg_name, "database the fixtures connect to"),
    OptionSpec("user", "postgres", _parse_pg_name,
               "superuser the harness works as; given, the fixtures connect as it too (not given, drills "
               "connect as a non-superuser drill role that can read everything)"),
    OptionSpec("preload", "none", _parse_preload,
               "libraries to keep in shared_preload_libraries (pg_stat_statements,auto_explain); every other "
               "library the backup preloads stays off"),
    OptionSpec("keep", "never", _one_of(*_KEEP), "keep the restored server and run dir: never, on-failure, always (it holds production data)", _KEEP),
    OptionSpec("timeout", "6h", _parse_timeout, f"limit for one restore: {DURATION_SYNTAX}"),
    OptionSpec(
        "workdir",
        None,
        _parse_dir,
        "run directory root (default $TMPDIR/pgrestore-<uid>)",
        default_factory=_default_workdir,
    ),
    OptionSpec("timeline", "latest", _parse_timeline, "recovery_target_timeline: latest, current or an id"),
    OptionSpec(
        "target_inclusive", "true", _parse_bool, "stop just after (true) or just before (false) the target"
    ),
    OptionSpec("pg_bin", None, _parse_dir, "directory of PostgreSQL binaries (default: found by version)"),
    OptionSpec("negative_control", "false", _parse_bool,
               "also run negative_control[<target>] per restore: the same restore with one needed WAL "
               "segment withheld, which passes only when the verdict catches it"),
    OptionSpec("plan_only", "false", _parse_bool,
               "catalog and pre-flight only: report the plan of every restore, download nothing"),
    OptionSpec("image", "postgres:{major}", _parse_image,
               "docker runtime: image to serve the restore in; {major} is the backup's major version"),
    OptionSpec("docker_network", "bridge", _one_of(*_DOCKER_NETWORKS),
               "docker runtime: bridge (publish a port) or host (the daemon's network)", _DOCKER_NETWORKS),
    OptionSpec("docker_mode", "auto", _one_of(*_DOCKER_MODES),
               "docker runtime: hand PGDATA over by bind mount, by copy, or auto (bind when the daemon "
               "sees our files)", _DOCKER_MODES),
)
#: The built-in checks ``--restore-checks`` collects (see plugin_checks.py).
CHECK_KINDS = ("expectations", "corruption", "hygiene")
_CHECKS_SYNTAX = "all | none | a comma-separated list of " + ", ".join(CHECK_KINDS)


def _parse_checks(value: object, origin: str) -> tuple[str, ...]:
    """``"all"`` → every kind; ``"corruption,hygiene"`` → those two, in canonical order."""
    if isinstance(value, (list, tuple, frozenset, set)):
        value = ",".join(map(str, value))
    words = [w.strip() for w in _text(value, origin, "checks").split(",") if w.strip()]
    if words == ["all"]:
        return CHECK_KINDS
    if words == ["none"]:
        return ()
    unknown = [w for w in words if w not in CHECK_KINDS]
    if unknown or not words:
        shown = unknown[0] if unknown else ""
        raise _usage(f"invalid checks {shown!r}", origin, _CHECKS_SYNTAX,
                     "pick from the accepted values; a bare --restore-checks written before a test path "
                     "takes that path as its value: put it after the paths, or write --restore-checks=all")
    return tuple(kind for kind in CHECK_KINDS if kind in words)


OPTIONS += (
    OptionSpec("checks", "none", _parse_checks,
               "built-in checks to collect: all (the flag alone), none, or any of expectations, corruption, "
               "hygiene (comma-separated); see docs/checks.md", const="all"),
)
_BY_NAME = {spec.name: spec for spec in OPTIONS}
#: The official PagerDuty Events API v2 endpoint; ``--restore-alert-pagerduty=on`` uses it.
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_KEY_VAR = "PGRESTORE_PAGERDUTY_ROUTING_KEY"


def _parse_path(value: object, origin: str) -> Path:
    """A file to write; relative paths are taken from the directory pytest was started in."""
    text = os.fspath(value).strip() if isinstance(value, (str, os.PathLike)) else ""
    if not text or "\0" in text:
        raise _usage(f"invalid file path {value!r}", origin, "a file path", "e.g. drill-evidence.json")
    return Path(text).absolute()


def _parse_sql(value: object, origin: str) -> str:
    text = _text(value, origin, "query")
    if not text:
        raise _usage("empty query", origin, "one SELECT returning a timestamp", "e.g. select max(ts) from heartbeat")
    return text


def _parse_url(value: object, origin: str) -> str:
    text = _text(value, origin, "URL")
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", text):
        # the value may carry a token: never echo it
        raise _usage("invalid URL (not shown: it may hold a token)", origin, "http:// or https:// URL",
                     "e.g. https://hooks.example.com/services/…")
    return text


def _parse_pagerduty(value: object, origin: str) -> str:
    text = _text(value, origin, "PagerDuty endpoint")
    return PAGERDUTY_EVENTS_URL if text.lower() in _TRUE else _parse_url(text, origin)


OPTIONS += (
    OptionSpec("report", None, _parse_path, "write the JSON evidence record of the run to this file"),
    OptionSpec("heartbeat_query", None, _parse_sql,
               "query on the restored database returning the newest heartbeat written in production "
               "(a timestamp): a candidate for the data recency (RPO) of `latest`"),
    OptionSpec("max_rto", None, _parse_timeout, f"fail a restore whose measured RTO exceeds this: {DURATION_SYNTAX}"),
    OptionSpec("max_rpo", None, _parse_timeout,
               f"fail a restore whose measured data recency (RPO) exceeds this: {DURATION_SYNTAX}"),
    OptionSpec("metrics", None, _parse_path,
               "write a Prometheus textfile (outcome, time, RTO, RPO per source/target) to this file"),
    OptionSpec("alert_webhook", None, _parse_url,
               "on a failed drill, POST a JSON summary to this URL (kept secret: never shown)", secret=True),
    OptionSpec("alert_pagerduty", None, _parse_pagerduty,
               f"on a failed drill, send a PagerDuty Events API v2 event: on (the official endpoint) or "
               f"a URL; the routing key comes from env {PAGERDUTY_KEY_VAR}"),
    OptionSpec("runbook_url", None, _parse_url, "link to the runbook, carried by alerts and the evidence"),
)
_BY_NAME = {spec.name: spec for spec in OPTIONS}

# -- speed at scale (issue 7): fetch concurrency, the download cache, progress ------------------
PROGRESS_SYNTAX = f"auto, live, off, or a duration between lines ({DURATION_SYNTAX})"


def _parse_concurrency(value: object, origin: str) -> int:
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 64:
        return int(text)
    raise _usage(f"invalid concurrency {value!r}", origin, "a whole number from 1 to 64", "e.g. 8")


def _parse_cache(value: object, origin: str) -> Path | None:
    """``off`` → None; ``on`` → the default cache directory; else an absolute directory."""
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip().lower() in ("off", "false", "no", "0"):
        return None
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip().lower() in ("on", "true", "yes", "1"):
        from ..restore._cache import default_cache_dir

        return default_cache_dir()
    try:
        return _parse_dir(value, origin)
    except UsageError:
        raise _usage(f"invalid cache {value!r}", origin, "off, on (the flag alone) or an absolute directory",
                     "e.g. --restore-cache or --restore-cache=/var/cache/pgrestore") from None


def _parse_progress(value: object, origin: str) -> str | float:
    text = _text(value, origin, "progress").strip().lower()
    if text in ("auto", "live", "off"):
        return text
    try:
        return parse_duration(text, origin=origin)
    except UsageError:
        raise _usage(f"invalid progress {value!r}", origin, PROGRESS_SYNTAX, "e.g. auto, off or 30s") from None


OPTIONS += (
    OptionSpec("fetch_concurrency", "8", _parse_concurrency,
               "most ranged parts of a large base-backup object in flight ahead of the reader (once the reader "
               "waits on its one stream: two at first, more each time it waits again), and pgBackRest files "
               "fetched at once; "
               "1: one plain stream per object; without it, WAL-G's WALG_DOWNLOAD_CONCURRENCY when set"),
    OptionSpec("cache", "off", _parse_cache,
               "keep fetched base-backup objects across runs, keyed by their ETag: off, on (the flag alone: "
               "~/.cache/pytest-pgrestore/backups) or a directory; it holds production data", const="on"),
    OptionSpec("cache_counts", "false", _parse_bool,
               "a run served from the cache still counts as an RTO measurement in the evidence"),
    OptionSpec("progress", "auto", _parse_progress,
               f"progress of a long fetch and replay: {PROGRESS_SYNTAX}; auto is a live line on a terminal, "
               "else a line every 30s"),
)
_BY_NAME = {spec.name: spec for spec in OPTIONS}


@dataclass(frozen=True)
class Settings:
    source: Source | None
    target: RestoreTarget
    format: str
    runtime: str
    dbname: str
    user: str
    keep: str
    timeout: float  # seconds
    workdir: Path
    timeline: str  # "latest" | "current" | decimal id
    target_inclusive: bool
    pg_bin: Path | None
    image: str = "postgres:{major}"
    preload: tuple[str, ...] = ()  # shared_preload_libraries kept from the quarantine
    docker_network: str = "bridge"
    docker_mode: str = "auto"
    plan_only: bool = False
    negative_control: bool = False
    checks: tuple[str, ...] = ()  # CHECK_KINDS to collect
    report: Path | None = None
    heartbeat_query: str | None = None
    max_rto: float | None = None  # seconds
    max_rpo: float | None = None  # seconds
    metrics: Path | None = None
    alert_webhook: str | None = field(default=None, repr=False)
    alert_pagerduty: str | None = None
    runbook_url: str | None = None
    fetch_concurrency: int = 8
    cache: Path | None = None  # --restore-cache directory; None: off
    cache_counts: bool = False
    progress: str | float = "auto"  # auto | live | off | seconds between lines
    origins: dict[str, str] = field(default_factory=dict, hash=False)  # name -> "env PGRESTORE_TARGET"
    env: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)  # holds AWS secrets

    @property
    def drill_role_default(self) -> bool:
        """Drills connect as the harness's least-privilege drill role: ``user`` was not given by
        any layer (its value is then only the harness's own superuser, default ``postgres``)."""
        return self.origins.get("user", "default") == "default"

    def require_source(self) -> Source:
        if self.source is None:
            raise _no_source(self.env)
        return self.source

    def replace(self, origin: str = "keyword", /, **values: object) -> Settings:
        """A copy with ``values`` parsed like any layer; ``None`` keeps the current value."""
        _check_names(values, origin)
        changes: dict[str, Any] = {}  # each name's parser returns its field's type (the OPTIONS table)
        origins = dict(self.origins)
        for name, value in values.items():
            if value is not None:
                label = f"{origin} {name}="
                changes[name] = _BY_NAME[name].parser(value, label)
                origins[name] = label
        return dataclasses.replace(self, **changes, origins=origins)

    def report_lines(self) -> list[str]:
        """Every effective value with where it came from: one line per setting that was given,
        one line gathering those left at their defaults."""
        lines, defaults = [], []
        for spec in OPTIONS:
            origin = self.origins.get(spec.name, "default")
            name = f"restore-{spec.name.replace('_', '-')}"
            if spec.name in ("source", "target") or origin != "default":
                lines.append(f"{name}: {self._show(spec.name)} (from {origin})")
            else:
                defaults.append(f"{name}={self._show(spec.name)}")
        if defaults:
            lines.append("defaults: " + ", ".join(defaults))
        return lines

    def _show(self, name: str) -> str:
        value = getattr(self, name)
        if name == "source" and value is None:
            return "none configured"
        if _BY_NAME[name].secret and value is not None:
            return "set (not shown)"
        if isinstance(value, str):
            return redact_userinfo(value)
        if name in ("max_rto", "max_rpo") and value is not None:
            return option_duration(value)
        if name in ("checks", "preload"):
            return ",".join(value) or "none"
        if name == "timeout" or (name == "progress" and isinstance(value, float)):
            return option_duration(value)
        if name == "cache" and value is None:
            return "off"
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)  # Source.__str__ is describe(): credentials never reach it


def _check_names(values: Mapping[str, object], origin: str) -> None:
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise _usage(
            f"unknown restore setting {', '.join(unknown)}", origin, ", ".join(_BY_NAME), "check the spelling"
        )


def _layers(
    spec: OptionSpec,
    overrides: Mapping[str, object],
    cli: Mapping[str, str | None],
    env: Mapping[str, str],
    ini: Mapping[str, str | None],
    override_origin: str,
) -> Iterator[tuple[str, str, object]]:
    """(origin label, error origin, raw value) for each layer, highest precedence first."""
    yield f"{override_origin} {spec.name}=", f"{override_origin} {spec.name}=", overrides.get(spec.name)
    yield f"cli {spec.cli_flag}", spec.cli_flag, cli.get(spec.name)
    yield f"env {spec.env_var}", f"env {spec.env_var}", env.get(spec.env_var) or None
    yield f"ini {spec.ini_key}", f"ini {spec.ini_key}", ini.get(spec.name) or None
    if spec.name == "source":
        for var in WALG_SOURCE_VARS:
            yield f"env {var}", f"env {var}", env.get(var) or None
    if spec.name == "fetch_concurrency":
        yield f"env {WALG_CONCURRENCY_VAR}", f"env {WALG_CONCURRENCY_VAR}", env.get(WALG_CONCURRENCY_VAR) or None


def resolve_settings(
    *,
    overrides: Mapping[str, object] | None = None,
    cli: Mapping[str, str | None],
    env: Mapping[str, str],
    ini: Mapping[str, str | None],
    override_origin: str = "keyword",
) -> Settings:
    """Resolve every option.  ``overrides``, ``cli`` and ``ini`` are keyed by option name
    (``"target"``); ``env`` is the environment itself (``PGRESTORE_TARGET``, ``WALG_S3_PREFIX``)."""
    overrides = overrides or {}
    _check_names(overrides, override_origin)
    values: dict[str, Any] = {}  # each spec's parser returns its field's type (the OPTIONS table)
    origins: dict[str, str] = {}
    for spec in OPTIONS:
        layers = _layers(spec, overrides, cli, env, ini, override_origin)
        found = next((layer for layer in layers if layer[2] is not None), None)
        if found is None:
            origins[spec.name] = "default"
            default = spec.default_text()
            values[spec.name] = None if default is None else spec.parser(default, f"default {spec.name}")
        else:
            origins[spec.name] = found[0]
            values[spec.name] = spec.parser(found[2], found[1])
    return Settings(**values, origins=origins, env=dict(env))


def _no_source(env: Mapping[str, str]) -> NoSourceConfigured:
    spec = _BY_NAME["source"]
    looked = [
        spec.cli_flag,
        f"env {spec.env_var}",
        f"ini {spec.ini_key}",
        *(f"env {v}" for v in WALG_SOURCE_VARS),
    ]
    notes = [
        f"env {var} is set but empty, which counts as unset"
        for var in (spec.env_var, *WALG_SOURCE_VARS)
        if var in env and not env[var]
    ]
    notes += [
        f"env {var} is set, but only S3 and local sources are supported"
        for var in sorted(env)
        if re.fullmatch(r"WAL[EG]_\w+_PREFIX", var) and var not in WALG_SOURCE_VARS
    ]
    return NoSourceConfigured(
        "no backup source configured" + "".join(f" ({note})" for note in notes),
        checked=", ".join(looked),
        fix=f"pass {spec.cli_flag}=s3://BUCKET/PREFIX (or file:///PATH), set {spec.env_var}, add "
        f"{spec.ini_key} to the ini file, or give source= to the fixture factory; there is no default",
    )
