"""Parse ``--restore-target`` into a :class:`RestoreTarget` (pure: no I/O).

The grammar is deliberately small and strict: a restore drill that silently reads
``2026-11-20T12:00:00`` as server-local time, or ``LATEST`` as one of two different things,
proves the wrong point.  Everything ambiguous is refused with the corrected spelling.

One exception waits for the listing: text the grammar does not recognize but that could be a
backup's name (``20261207T204321Z``, ``nightly-2026-12-07``: folder names people choose) parses
as a *tentative* backup target.  The plan makes it that backup when the source holds one of that
name, and otherwise raises the refusal it would have had here (:meth:`RestoreTarget.refusal`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from ..errors import TargetError

__all__ = ["KINDS", "RestoreTarget", "TargetError", "format_lsn", "parse_lsn"]

KINDS = ("latest", "immediate", "oldest", "backup", "time", "lsn", "xid", "name")
_KEYWORDS = ("latest", "immediate", "oldest")
_PINNABLE = ("time", "lsn", "xid", "name")
_PIN = "@backup:"

SYNTAX = (
    "latest | immediate | oldest | backup:NAME or a bare backup name (base_<24 hex>[_D_<24 hex>], "
    "20261120-120000F[_20261120-130000D|I], 20261120T120000, or any other name the source lists) | "
    "an RFC 3339 time (2026-11-20T12:00:00Z, "
    "2026-11-20 12:00:00.5+02:00) | lsn:X/Y | xid:N | name:POINT; the last four may end with @backup:NAME"
)

# PostgreSQL refuses restore point names of MAXFNAMELEN (64) bytes or more, terminator included.
MAX_RESTORE_POINT_BYTES = 63
_MAX_BACKUP_NAME = 255  # backup names become directory names in every format
_FIRST_NORMAL_XID = 3  # 0 invalid, 1 bootstrap, 2 frozen: never the xid of a commit
_NAME_ROOT = "[0-9A-F]{24}"
_BACKUP_PATTERNS = (
    re.compile(rf"base_{_NAME_ROOT}(?:_D_{_NAME_ROOT})?"),  # WAL-G full / delta
    re.compile(r"[0-9]{8}-[0-9]{6}F(?:_[0-9]{8}-[0-9]{6}[DI])?"),  # pgBackRest full / diff / incr
    re.compile(r"[0-9]{8}T[0-9]{6}"),  # barman backup id, basebackup default directory name
)
_BACKUP_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
# Anything that looks like an attempt at a timestamp, to suggest the RFC 3339 spelling.
_LOOSE_TIME = re.compile(
    r"(\d{4})-?(\d{2})-?(\d{2})(?:[Tt ](\d{2}):?(\d{2})(?::?(\d{2}))?(?:\.(\d+))?)?"
    r"\s*(?:([Zz]|UTC|GMT)|([+-])(\d{2}):?(\d{2})?|([A-Za-z][A-Za-z_/+-]*))?"
)


class _Unrecognized(Exception):
    """A refusal of text the grammar does not recognize at all: a backup name, if the listing says so."""

    def __init__(self, error: TargetError) -> None:
        super().__init__(error.what)
        self.error = error


def parse_lsn(text: str) -> int:
    """``"0/3000148"`` → ``0x3000148``; raises :class:`ValueError` (server output is trusted input)."""
    match = _LSN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an LSN (X/Y, each at most 8 hex digits): {text!r}")
    return int(match[1], 16) << 32 | int(match[2], 16)


def format_lsn(lsn: int) -> str:
    """``0x3000148`` → ``"0/3000148"``: upper-case hex, as PostgreSQL prints ``pg_lsn``."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class RestoreTarget:
    """Where recovery should stop.  Compare by meaning: ``text`` is kept only for messages."""

    kind: str
    text: str = field(compare=False)
    time: datetime | None = None  # timezone-aware
    lsn: int | None = None
    xid: int | None = None
    name: str | None = None  # restore point name
    backup: str | None = None  # the backup for kind "backup", else an optional pin
    # A bare name the grammar does not know: that backup if the source lists it, else refusal().
    tentative: bool = field(default=False, compare=False)
    origin: str = field(default="--restore-target", compare=False, repr=False)  # for refusal()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown target kind {self.kind!r}")
        carried = _CARRIES.get(self.kind)
        if carried is not None and getattr(self, carried) is None:
            raise ValueError(f"a {self.kind} target needs its {carried}")

    # The value a kind carries, for code that has checked the kind: __post_init__ guarantees it
    # is set for that kind, so these raise only when asked of another kind (a programming error).
    @property
    def stop_time(self) -> datetime:
        return _carried(self, "time", self.time)

    @property
    def stop_lsn(self) -> int:
        return _carried(self, "lsn", self.lsn)

    @property
    def stop_xid(self) -> int:
        return _carried(self, "xid", self.xid)

    @property
    def stop_name(self) -> str:
        return _carried(self, "name", self.name)

    @property
    def backup_name(self) -> str:
        """The backup a ``backup`` target names, or the pin of a pinned one."""
        return _carried(self, "backup", self.backup)

    @classmethod
    def parse(cls, text: str, *, origin: str = "--restore-target") -> RestoreTarget:
        """The target ``text`` names; raises :class:`TargetError` with the corrected spelling.

        Text the grammar does not recognize but made only of backup-name characters gives a
        tentative ``backup`` target instead (see the module docstring)."""
        return _Parser(text, origin).parse()

    def refusal(self) -> TargetError | None:
        """The error strict parsing gives this target's text (with its origin and hint): what a
        tentative target stands for when the source holds no backup of that name."""
        try:
            _Parser(self.text, self.origin, strict=True).parse()
        except TargetError as exc:
            return exc
        return None

    @property
    def needs_replay_search(self) -> bool:
        """Where an xid or restore point lies is only known by replaying WAL."""
        return self.kind in ("xid", "name")

    @property
    def stops_at_consistency(self) -> bool:
        return self.kind in ("immediate", "oldest", "backup")

    def __str__(self) -> str:
        if self.kind in _KEYWORDS:
            return self.kind
        if self.kind == "backup":  # a tentative one as written: it may yet turn out to be a typo
            return self.backup_name if self.tentative else f"backup:{self.backup}"
        if self.kind == "time":
            body = _format_time(self.stop_time)
        elif self.kind == "lsn":
            body = f"lsn:{format_lsn(self.stop_lsn)}"
        else:
            body = f"{self.kind}:{self.xid if self.kind == 'xid' else self.name}"
        return body + (f"{_PIN}{self.backup}" if self.backup else "")

    @property
    def slug(self) -> str:
        """A short id safe in file names and pytest ids, distinct for distinct targets."""
        if self.kind in _KEYWORDS:
            return self.kind
        if self.kind == "backup":
            return f"backup-{_safe(self.backup_name)}"
        if self.kind == "time":
            body = "time-" + _format_time(self.stop_time.astimezone(timezone.utc)).translate(_COMPACT)
        elif self.kind == "lsn":
            body = "lsn-" + format_lsn(self.stop_lsn).replace("/", "-")
        elif self.kind == "xid":
            body = f"xid-{self.xid}"
        else:
            body = f"name-{_safe(self.stop_name)}"
        return body + (f"-from-{_safe(self.backup)}" if self.backup else "")


_COMPACT = str.maketrans("", "", "-:")
# The field each kind must carry (the keywords carry none; a pin in ``backup`` is optional).
_CARRIES = {"backup": "backup", "time": "time", "lsn": "lsn", "xid": "xid", "name": "name"}
_T = TypeVar("_T")


def _carried(target: RestoreTarget, kind: str, value: _T | None) -> _T:
    if value is None:
        raise ValueError(f"a {target.kind} target carries no {kind}")
    return value


def _safe(text: str) -> str:
    """File-name-safe spelling; a hash suffix keeps ``a b`` and ``a_b`` apart."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _format_time(moment: datetime) -> str:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        stamp += f".{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset()
    if not offset:
        return stamp + "Z"
    sign, offset = ("-", -offset) if offset < timedelta(0) else ("+", offset)
    hours, minutes = divmod(int(offset.total_seconds()) // 60, 60)
    return f"{stamp}{sign}{hours:02d}:{minutes:02d}"


class _Parser:
    """One parse: keeps the original text and origin so every refusal can name them."""

    def __init__(self, text: str, origin: str, *, strict: bool = False) -> None:
        self.raw = text
        self.text = text.strip()
        self.origin = origin
        self.strict = strict  # no tentative backup target: every unrecognized text is refused

    def fail(self, problem: str, hint: str) -> TargetError:
        shown = repr(self.raw) if self.text else "an empty value"
        return TargetError(
            f"invalid restore target {shown} (from {self.origin}): {problem}",
            checked=f"accepted: {SYNTAX}",
            fix=hint,
        )

    def unrecognized(self, problem: str, hint: str) -> _Unrecognized:
        """A refusal that stands only if the text names no backup either (see :meth:`parse`)."""
        return _Unrecognized(self.fail(problem, hint))

    def parse(self) -> RestoreTarget:
        try:
            return self.parse_text()
        except _Unrecognized as exc:
            text = self.text
            if self.strict or len(text) > _MAX_BACKUP_NAME or not _BACKUP_NAME_CHARS.fullmatch(text):
                raise exc.error from None
            return RestoreTarget("backup", self.raw, backup=text, tentative=True, origin=self.origin)

    def parse_text(self) -> RestoreTarget:
        text = self.text
        if not text:
            raise self.fail("it is empty", "pass latest to replay all archived WAL")
        if _PIN in text and not text.startswith("backup:"):
            head, _, pin = text.rpartition(_PIN)
            target = self.parse_unpinned(head)
            if target.kind not in _PINNABLE:
                raise self.fail(
                    f"{target.kind} cannot take a @backup: pin",
                    f"only time, lsn, xid and name targets are pinned; to stop at a backup write backup:{pin}",
                )
            return replace(target, backup=self.backup_name(pin))
        return self.parse_unpinned(text)

    def parse_unpinned(self, text: str) -> RestoreTarget:
        if text in _KEYWORDS:
            return RestoreTarget(text, self.raw)
        self.refuse_case_variants(text)
        prefix, colon, rest = text.partition(":")
        if colon and prefix in ("backup", "lsn", "xid", "name"):
            return getattr(self, f"parse_{prefix}")(rest)
        if any(pattern.fullmatch(text) for pattern in _BACKUP_PATTERNS):
            return RestoreTarget("backup", self.raw, backup=text)
        match = _RFC3339.fullmatch(text)
        if match:
            return RestoreTarget("time", self.raw, time=self.make_time(match))
        self.refuse_near_time(text)
        if colon and re.fullmatch(r"[A-Za-z_]+", prefix):
            hint = (
                "drop the prefix: a bare RFC 3339 time is a time target"
                if prefix.lower() in ("time", "timestamp")
                else "use one of the prefixes backup:, lsn:, xid:, name:"
            )
            raise self.unrecognized(f"unknown prefix {prefix + ':'!r}", hint)
        raise self.unrecognized(
            "it is not a keyword, a known backup name pattern, a time or a prefixed target",
            "for a backup with another name write backup:NAME",
        )

    def refuse_case_variants(self, text: str) -> None:
        lowered = text.lower()
        if lowered in _KEYWORDS and text == "LATEST":
            raise self.fail(
                "LATEST is ambiguous (the keyword latest replays all WAL; WAL-G's LATEST is the newest backup)",
                "use latest to replay all archived WAL, or immediate to stop at the newest backup's "
                "consistency point (backup:LATEST names WAL-G's newest backup)",
            )
        if lowered in _KEYWORDS:
            raise self.fail("keywords are lower case", f"write {lowered}")
        prefix, colon, rest = text.partition(":")
        if colon and prefix != prefix.lower() and prefix.lower() in ("backup", "lsn", "xid", "name"):
            raise self.fail("prefixes are lower case", f"write {prefix.lower()}:{rest}")

    def parse_backup(self, name: str) -> RestoreTarget:
        return RestoreTarget("backup", self.raw, backup=self.backup_name(name))

    def backup_name(self, name: str) -> str:
        # backup:LATEST is the format's newest backup (WAL-G: the newest sentinel), resolved by the catalog
        if not name:
            raise self.fail("the backup name is empty", "write backup:NAME, e.g. backup:20261120T120000")
        if len(name) > _MAX_BACKUP_NAME or not _BACKUP_NAME_CHARS.fullmatch(name):
            raise self.fail(
                f"{name!r} is not a backup name",
                "backup names start with a letter or digit and use only letters, digits and . _ : + -",
            )
        return name

    def parse_lsn(self, text: str) -> RestoreTarget:
        try:
            lsn = parse_lsn(text)
        except ValueError:
            raise self.fail(
                "an LSN is two hex numbers of at most 8 digits separated by /",
                "copy it from pg_current_wal_lsn(), e.g. lsn:0/3000148",
            ) from None
        if lsn == 0:
            raise self.fail("0/0 is the invalid LSN", "pass a real LSN, e.g. lsn:0/3000148")
        return RestoreTarget("lsn", self.raw, lsn=lsn)

    def parse_xid(self, text: str) -> RestoreTarget:
        # [0-9] not \d (Unicode digits) and not int() alone (it accepts "+5" and "5_000").
        if not re.fullmatch(r"[0-9]{1,20}", text) or int(text) >= 1 << 64:
            raise self.fail("an xid is a decimal number", "copy it from pg_current_xact_id(), e.g. xid:1234")
        xid = int(text)
        # A 64-bit xid (epoch << 32 | xid) is allowed; its low half follows the same rule.
        if xid & 0xFFFFFFFF < _FIRST_NORMAL_XID:
            raise self.fail(
                "xids 0, 1 and 2 are special (invalid, bootstrap, frozen) and never commit",
                "pass the xid of a real transaction, 3 or higher",
            )
        return RestoreTarget("xid", self.raw, xid=xid)

    def parse_name(self, name: str) -> RestoreTarget:
        if not name:
            raise self.fail(
                "the restore point name is empty", "write name:POINT, as given to pg_create_restore_point()"
            )
        if len(name.encode()) > MAX_RESTORE_POINT_BYTES:
            raise self.fail(
                f"restore point names are at most {MAX_RESTORE_POINT_BYTES} bytes",
                "PostgreSQL could not have created this restore point; check the name",
            )
        if any(ord(char) < 32 or ord(char) == 127 for char in name):
            raise self.fail("the restore point name holds a control character", "remove it")
        return RestoreTarget("name", self.raw, name=name)

    def make_time(self, match: re.Match[str]) -> datetime:
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        # Microseconds are PostgreSQL's resolution; dropping finer digits rounds down,
        # which keeps an inclusive target's set of commits unchanged.
        micro = int((match[7] or "").ljust(6, "0")[:6])
        if match[8]:
            offset = timedelta(0)
        else:  # RFC 3339's -00:00 ("offset unknown") names the same instant as Z
            if int(match[10]) > 23 or int(match[11]) > 59:
                raise self.fail("the UTC offset is out of range", "offsets run from -23:59 to +23:59")
            offset = timedelta(hours=int(match[10]), minutes=int(match[11]))
            offset = -offset if match[9] == "-" else offset
        try:
            return datetime(year, month, day, hour, minute, second, micro, tzinfo=timezone(offset))
        except ValueError as exc:
            raise self.fail(
                f"it is not a valid date and time ({exc})", "check the calendar date and clock time"
            ) from None

    def refuse_near_time(self, text: str) -> None:
        """A near-miss timestamp gets the corrected RFC 3339 form as its hint."""
        if text.isdigit():
            raise self.unrecognized(
                "a bare number is ambiguous", "write xid:N for a transaction id, or an RFC 3339 time"
            )
        match = _LOOSE_TIME.fullmatch(text)
        if match is None:
            return
        year, month, day, hour, minute, second, frac, utc, sign, off_h, off_m, zone = match.groups()
        clock = f"{hour or '00'}:{minute or '00'}:{second or '00'}" + (f".{frac}" if frac else "")
        fixed = f"{year}-{month}-{day}T{clock}"
        if zone or (utc and utc not in "Zz"):
            raise self.unrecognized(
                "time zone names are not accepted", f"write Z for UTC or a numeric offset: {fixed}Z"
            )
        if not hour:
            raise self.unrecognized(
                "a date alone is not a point in time", f"add a time and an offset: {fixed}Z"
            )
        if not (utc or sign):
            raise self.unrecognized(
                "the time has no UTC offset, so its meaning would depend on the server's time zone",
                f"add Z for UTC: {fixed}Z (or an offset such as {fixed}+02:00)",
            )
        offset = f"{sign}{off_h}:{off_m or '00'}" if sign else "Z"
        raise self.unrecognized(
            "it is not in RFC 3339 form (YYYY-MM-DDTHH:MM:SS[.frac] then Z or ±hh:mm)",
            f"write {fixed}{offset}",
        )
