"""RestoreTarget.parse, parse_lsn and format_lsn: every accepted form and every refusal."""

from __future__ import annotations

import pickle
import re
from datetime import datetime, timedelta, timezone

import pytest

from pytest_pgrestore.errors import PgRestoreError, UsageError
from pytest_pgrestore.settings._target import KINDS, SYNTAX, RestoreTarget, TargetError, format_lsn, parse_lsn

UTC = timezone.utc
WALG = "base_000000010000000000000002"
WALG_DELTA = "base_000000010000000000000004_D_000000010000000000000002"


def plus(hours: int, minutes: int = 0) -> timezone:
    return timezone(timedelta(hours=hours, minutes=minutes))


# text, expected fields (besides text), canonical str, slug
VALID = [
    ("latest", {"kind": "latest"}, "latest", "latest"),
    ("immediate", {"kind": "immediate"}, "immediate", "immediate"),
    ("oldest", {"kind": "oldest"}, "oldest", "oldest"),
    ("  latest\n", {"kind": "latest"}, "latest", "latest"),
    ("backup:nightly", {"kind": "backup", "backup": "nightly"}, "backup:nightly", "backup-nightly"),
    ("backup:LATEST_1", {"kind": "backup", "backup": "LATEST_1"}, "backup:LATEST_1", "backup-LATEST_1"),
    ("backup:LATEST", {"kind": "backup", "backup": "LATEST"}, "backup:LATEST", "backup-LATEST"),
    ("xid:5@backup:LATEST", {"kind": "xid", "xid": 5, "backup": "LATEST"}, "xid:5@backup:LATEST", "xid-5-from-LATEST"),
    (WALG, {"kind": "backup", "backup": WALG}, f"backup:{WALG}", f"backup-{WALG}"),
    (WALG_DELTA, {"kind": "backup", "backup": WALG_DELTA}, f"backup:{WALG_DELTA}", f"backup-{WALG_DELTA}"),
    ("20261120-120000F", {"kind": "backup", "backup": "20261120-120000F"}, "backup:20261120-120000F",
     "backup-20261120-120000F"),
    ("20261120-120000F_20261121-010000D", {"kind": "backup", "backup": "20261120-120000F_20261121-010000D"},
     "backup:20261120-120000F_20261121-010000D", "backup-20261120-120000F_20261121-010000D"),
    ("20261120-120000F_20261121-010000I", {"kind": "backup", "backup": "20261120-120000F_20261121-010000I"},
     "backup:20261120-120000F_20261121-010000I", "backup-20261120-120000F_20261121-010000I"),
    ("20261120T120000", {"kind": "backup", "backup": "20261120T120000"}, "backup:20261120T120000",
     "backup-20261120T120000"),
    ("backup:20261120T120000", {"kind": "backup", "backup": "20261120T120000"}, "backup:20261120T120000",
     "backup-20261120T120000"),
    ("backup:a:b+c", {"kind": "backup", "backup": "a:b+c"}, "backup:a:b+c", None),
    ("2026-11-20T12:00:00Z", {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=UTC)},
     "2026-11-20T12:00:00Z", "time-20261120T120000Z"),
    ("2026-11-20t12:00:00z", {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=UTC)},
     "2026-11-20T12:00:00Z", "time-20261120T120000Z"),
    ("2026-11-20 12:00:00+00:00", {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=UTC)},
     "2026-11-20T12:00:00Z", "time-20261120T120000Z"),
    ("2026-11-20T12:00:00-00:00", {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=UTC)},
     "2026-11-20T12:00:00Z", "time-20261120T120000Z"),
    ("2026-11-20T12:00:00+02:00", {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=plus(2))},
     "2026-11-20T12:00:00+02:00", "time-20261120T100000Z"),
    ("2026-11-20T01:00:00-05:30", {"kind": "time", "time": datetime(2026, 11, 20, 1, tzinfo=plus(-5, -30))},
     "2026-11-20T01:00:00-05:30", "time-20261120T063000Z"),
    ("2026-11-20T12:00:00.5Z", {"kind": "time", "time": datetime(2026, 11, 20, 12, 0, 0, 500000, tzinfo=UTC)},
     "2026-11-20T12:00:00.5Z", "time-20261120T120000.5Z"),
    # PostgreSQL keeps microseconds; finer digits are dropped (rounding down keeps inclusive semantics).
    ("2026-11-20T12:00:00.1234569Z",
     {"kind": "time", "time": datetime(2026, 11, 20, 12, 0, 0, 123456, tzinfo=UTC)},
     "2026-11-20T12:00:00.123456Z", "time-20261120T120000.123456Z"),
    ("2028-02-29T23:59:59Z", {"kind": "time", "time": datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)},
     "2028-02-29T23:59:59Z", "time-20280229T235959Z"),
    ("lsn:0/3000148", {"kind": "lsn", "lsn": 0x3000148}, "lsn:0/3000148", "lsn-0-3000148"),
    ("lsn:16/b374d848", {"kind": "lsn", "lsn": 0x16B374D848}, "lsn:16/B374D848", "lsn-16-B374D848"),
    ("lsn:FFFFFFFF/FFFFFFFF", {"kind": "lsn", "lsn": (1 << 64) - 1}, "lsn:FFFFFFFF/FFFFFFFF",
     "lsn-FFFFFFFF-FFFFFFFF"),
    ("lsn:00000000/00000001", {"kind": "lsn", "lsn": 1}, "lsn:0/1", "lsn-0-1"),
    ("xid:3", {"kind": "xid", "xid": 3}, "xid:3", "xid-3"),
    ("xid:0012345", {"kind": "xid", "xid": 12345}, "xid:12345", "xid-12345"),
    ("xid:4294967299", {"kind": "xid", "xid": 4294967299}, "xid:4294967299", "xid-4294967299"),
    ("name:before-migration", {"kind": "name", "name": "before-migration"}, "name:before-migration",
     "name-before-migration"),
    ("name:x" + "a" * 62, {"kind": "name", "name": "x" + "a" * 62}, "name:x" + "a" * 62, None),
    ("name:été", {"kind": "name", "name": "été"}, "name:été", None),
    ("name:a@b", {"kind": "name", "name": "a@b"}, "name:a@b", None),
    ("xid:1234@backup:" + WALG, {"kind": "xid", "xid": 1234, "backup": WALG}, "xid:1234@backup:" + WALG,
     f"xid-1234-from-{WALG}"),
    ("name:pre@backup:nightly", {"kind": "name", "name": "pre", "backup": "nightly"},
     "name:pre@backup:nightly", "name-pre-from-nightly"),
    ("name:a@backup:b@backup:c", {"kind": "name", "name": "a@backup:b", "backup": "c"},
     "name:a@backup:b@backup:c", None),
    ("2026-11-20T12:00:00Z@backup:20261120T000000",
     {"kind": "time", "time": datetime(2026, 11, 20, 12, tzinfo=UTC), "backup": "20261120T000000"},
     "2026-11-20T12:00:00Z@backup:20261120T000000", "time-20261120T120000Z-from-20261120T000000"),
    ("lsn:0/1@backup:x", {"kind": "lsn", "lsn": 1, "backup": "x"}, "lsn:0/1@backup:x", "lsn-0-1-from-x"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "fields", "canonical", "slug"), VALID, ids=[v[0][:40] for v in VALID])
def test_valid(text: str, fields: dict, canonical: str, slug: str | None) -> None:
    target = RestoreTarget.parse(text)
    expected = {"time": None, "lsn": None, "xid": None, "name": None, "backup": None, **fields}
    assert {key: getattr(target, key) for key in expected} == expected
    assert target.text == text
    assert str(target) == canonical
    if slug is not None:
        assert target.slug == slug
    assert re.fullmatch(r"[A-Za-z0-9._-]+", target.slug)
    if target.time is not None:
        assert target.time.tzinfo is not None
    # The canonical form parses back to the same target.
    assert RestoreTarget.parse(str(target)) == target
    assert str(RestoreTarget.parse(str(target))) == canonical


def test_equality_ignores_original_text() -> None:
    assert RestoreTarget.parse(" latest ") == RestoreTarget.parse("latest")
    assert RestoreTarget.parse(WALG) == RestoreTarget.parse(f"backup:{WALG}")
    assert hash(RestoreTarget.parse("xid:5")) == hash(RestoreTarget.parse("xid:005"))
    assert RestoreTarget.parse("xid:5") != RestoreTarget.parse("xid:5@backup:x")


def test_slugs_stay_distinct_when_names_are_sanitized() -> None:
    slugs = {RestoreTarget.parse(t).slug for t in ("name:a b", "name:a_b", "name:a/b", "name:a?b")}
    assert len(slugs) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", slug) for slug in slugs)


@pytest.mark.parametrize(
    ("text", "search", "consistency"),
    [
        ("latest", False, False),
        ("immediate", False, True),
        ("oldest", False, True),
        ("backup:x", False, True),
        ("2026-11-20T12:00:00Z", False, False),
        ("lsn:0/1", False, False),
        ("xid:10", True, False),
        ("name:x", True, False),
        ("xid:10@backup:x", True, False),
    ],
)
def test_properties(text: str, search: bool, consistency: bool) -> None:
    target = RestoreTarget.parse(text)
    assert target.needs_replay_search is search
    assert target.stops_at_consistency is consistency


def test_kinds_are_closed() -> None:
    assert set(KINDS) == {"latest", "immediate", "oldest", "backup", "time", "lsn", "xid", "name"}
    with pytest.raises(ValueError, match="unknown target kind"):
        RestoreTarget("newest", "newest")


def test_frozen() -> None:
    target = RestoreTarget.parse("latest")
    with pytest.raises(AttributeError):
        target.kind = "oldest"  # type: ignore[misc]


# text, a fragment of the problem, a fragment of the hint
INVALID = [
    ("", "it is empty", "latest"),
    ("   ", "it is empty", "latest"),
    ("LATEST", "ambiguous", "use latest to replay all archived WAL, or immediate to stop at the newest backup"),
    ("LATEST@backup:x", "ambiguous", "immediate"),
    ("Latest", "lower case", "write latest"),
    ("IMMEDIATE", "lower case", "write immediate"),
    ("Oldest", "lower case", "write oldest"),
    ("LSN:0/1", "prefixes are lower case", "write lsn:0/1"),
    ("Backup:x", "prefixes are lower case", "write backup:x"),
    ("XID:5", "prefixes are lower case", "write xid:5"),
    ("Name:x", "prefixes are lower case", "write name:x"),
    ("backup:", "backup name is empty", "backup:NAME"),
    ("backup:a b", "not a backup name", "letters, digits"),
    ("backup:../etc", "not a backup name", "letters, digits"),
    ("backup:a/b", "not a backup name", "letters, digits"),
    ("backup:x@backup:y", "not a backup name", "letters, digits"),
    ("backup:" + "a" * 256, "not a backup name", "letters, digits"),
    ("2026-11-20 12:00:00", "no UTC offset", "add Z for UTC: 2026-11-20T12:00:00Z"),
    ("2026-11-20T12:00:00 Z", "not in RFC 3339 form", "write 2026-11-20T12:00:00Z"),
    ("2026-11-20 12:00:00 UTC", "time zone names", "2026-11-20T12:00:00Z"),
    ("2026-11-20 12:00:00 Europe/Paris", "time zone names", "numeric offset"),
    ("2026-02-30T12:00:00Z", "not a valid date", "calendar"),
    ("2026-13-01T12:00:00Z", "not a valid date", "calendar"),
    ("2026-11-20T24:00:00Z", "not a valid date", "calendar"),
    ("2026-12-31T23:59:60Z", "not a valid date", "calendar"),
    ("0000-01-01T00:00:00Z", "not a valid date", "calendar"),
    ("2026-11-20T12:00:00+24:00", "offset is out of range", "+23:59"),
    ("2026-11-20T12:00:00+02:60", "offset is out of range", "+23:59"),
    ("lsn:", "two hex numbers", "lsn:0/3000148"),
    ("lsn:3000148", "two hex numbers", "lsn:0/3000148"),
    ("lsn:0/", "two hex numbers", "lsn:0/3000148"),
    ("lsn:0/123456789", "two hex numbers", "lsn:0/3000148"),
    ("lsn:123456789/0", "two hex numbers", "lsn:0/3000148"),
    ("lsn:0/3G", "two hex numbers", "lsn:0/3000148"),
    ("lsn:0x0/1", "two hex numbers", "lsn:0/3000148"),
    ("lsn:0/0", "invalid LSN", "lsn:0/3000148"),
    ("xid:", "decimal number", "xid:1234"),
    ("xid:0", "special", "3 or higher"),
    ("xid:1", "special", "3 or higher"),
    ("xid:2", "special", "3 or higher"),
    ("xid:4294967296", "special", "3 or higher"),  # epoch 1, xid 0
    ("xid:4294967298", "special", "3 or higher"),  # epoch 1, xid 2
    ("xid:-5", "decimal number", "xid:1234"),
    ("xid:+5", "decimal number", "xid:1234"),
    ("xid:5_000", "decimal number", "xid:1234"),
    ("xid:0x10", "decimal number", "xid:1234"),
    ("xid:١٢٣", "decimal number", "xid:1234"),  # Arabic-Indic digits: int() would take them
    ("xid:18446744073709551616", "decimal number", "xid:1234"),
    ("xid:5@5", "decimal number", "xid:1234"),
    ("name:", "name is empty", "pg_create_restore_point"),
    ("name:" + "a" * 64, "at most 63 bytes", "check the name"),
    ("name:" + "é" * 32, "at most 63 bytes", "check the name"),  # 64 bytes in 32 characters
    ("name:a\tb", "control character", "remove it"),
    ("latest@backup:x", "cannot take a @backup: pin", "backup:x"),
    ("immediate@backup:x", "cannot take a @backup: pin", "backup:x"),
    (f"{WALG}@backup:x", "cannot take a @backup: pin", "backup:x"),
    ("xid:5@backup:", "backup name is empty", "backup:NAME"),
    ("xid:5@backup:a b", "not a backup name", "letters, digits"),
    ("xid:x@backup:y", "decimal number", "xid:1234"),
    # Not a backup name either (a space, a slash, a leading dot, too long, a pin), so refused at once:
    ("nightly build", "not a keyword", "backup:NAME"),
    ("nightly/2026-12-07", "not a keyword", "backup:NAME"),
    (".nightly", "not a keyword", "backup:NAME"),
    ("-5", "not a keyword", "backup:NAME"),
    ("a" * 256, "not a keyword", "backup:NAME"),
    ("2026-11-20T12:00:00@backup:x", "no UTC offset", "add Z for UTC: 2026-11-20T12:00:00Z"),
    ("20261207T204321Z@backup:x", "not in RFC 3339 form", "write 2026-12-07T20:43:21Z"),
    ("nightly@backup:x", "not a keyword", "backup:NAME"),
]  # fmt: skip

# Text the grammar does not recognize but made of backup-name characters: a tentative backup target,
# refused with exactly this refusal once the listing holds no backup of that name (u/test_plan.py).
UNLESS_A_BACKUP = [
    ("base_00000001000000000000000", "not a keyword", "backup:NAME"),  # 23 hex
    ("base_000000010000000000000002_D_", "not a keyword", "backup:NAME"),
    ("base_000000010000000000000002_d_000000010000000000000001", "not a keyword", "backup:NAME"),
    ("20261120-120000", "not a keyword", "backup:NAME"),
    ("20261120-120000F_20261120-130000F", "not a keyword", "backup:NAME"),
    ("nightly", "not a keyword", "backup:NAME"),
    ("now", "not a keyword", "backup:NAME"),
    ("nightly-2026-12-07", "not a keyword", "backup:NAME"),
    ("a" * 255, "not a keyword", "backup:NAME"),
    ("12345", "bare number", "xid:N"),
    ("2026-11-20T12:00:00", "no UTC offset", "add Z for UTC: 2026-11-20T12:00:00Z"),
    ("2026-11-20T12:00:00.25", "no UTC offset", "2026-11-20T12:00:00.25Z"),
    ("2026-11-20T12:00", "no UTC offset", "2026-11-20T12:00:00Z"),
    ("2026-12-07_0300", "not a keyword", "backup:NAME"),
    ("2026-11-20", "a date alone", "2026-11-20T00:00:00Z"),
    ("20261120", "bare number", "xid:N"),
    ("20261120T120000Z", "not in RFC 3339 form", "write 2026-11-20T12:00:00Z"),
    ("20261207T204321Z", "not in RFC 3339 form", "write 2026-12-07T20:43:21Z"),
    ("20261120T120000+0200", "not in RFC 3339 form", "write 2026-11-20T12:00:00+02:00"),
    ("2026-11-20T12:00:00+0200", "not in RFC 3339 form", "write 2026-11-20T12:00:00+02:00"),
    ("2026-11-20T12:00:00+02", "not in RFC 3339 form", "write 2026-11-20T12:00:00+02:00"),
    ("2026-11-20T12:00Z", "not in RFC 3339 form", "write 2026-11-20T12:00:00Z"),
    ("2026-11-20T12:00:00GMT", "time zone names", "2026-11-20T12:00:00Z"),
    ("time:2026-11-20T12:00:00Z", "unknown prefix 'time:'", "drop the prefix"),
    ("timestamp:2026-11-20T12:00:00Z", "unknown prefix", "drop the prefix"),
    ("txid:5", "unknown prefix 'txid:'", "backup:, lsn:, xid:, name:"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "problem", "hint"), INVALID, ids=[v[0][:40] or "empty" for v in INVALID])
def test_invalid(text: str, problem: str, hint: str) -> None:
    """Refused at parse time: keywords' and prefixes' case variants, invalid prefixed bodies and pins,
    RFC 3339 times with impossible values, and text no backup can be named."""
    with pytest.raises(TargetError) as info:
        RestoreTarget.parse(text, origin="env PGRESTORE_TARGET")
    err = info.value
    message = str(err)
    assert "(from env PGRESTORE_TARGET)" in message
    assert problem in err.what
    assert hint in err.fix
    assert SYNTAX in err.checked  # the accepted syntax is always shown
    assert (repr(text) if text.strip() else "an empty value") in err.what
    assert isinstance(err, UsageError) and isinstance(err, PgRestoreError)


def check_refusal(err: TargetError, text: str, problem: str, hint: str) -> None:
    assert "(from env PGRESTORE_TARGET)" in str(err)
    assert problem in err.what
    assert hint in err.fix
    assert SYNTAX in err.checked
    assert repr(text) in err.what
    assert type(err) is TargetError and isinstance(err, UsageError)


@pytest.mark.parametrize(
    ("text", "problem", "hint"), UNLESS_A_BACKUP, ids=[v[0][:40] for v in UNLESS_A_BACKUP]
)
def test_unrecognized_backup_name_characters_wait_for_the_listing(text: str, problem: str, hint: str) -> None:
    target = RestoreTarget.parse(f" {text} ", origin="env PGRESTORE_TARGET")
    assert (target.kind, target.backup, target.tentative) == ("backup", text, True)
    assert str(target) == text  # as written, in labels and messages: it may yet be a typo
    assert target == RestoreTarget.parse(f"backup:{text}")  # if it is a backup, it is this one
    assert target.stops_at_consistency and not target.needs_replay_search
    assert re.fullmatch(r"[A-Za-z0-9._-]+", target.slug)
    # what the plan raises when no backup has the name: today's refusal, its origin and hint
    check_refusal(target.refusal(), f" {text} ", problem, hint)
    assert pickle.loads(pickle.dumps(target)).refusal().what == target.refusal().what  # xdist workers
    with pytest.raises(TargetError) as info:  # the strict grammar, as before
        RestoreTarget.parse(f"backup:{text}@backup:x")
    assert "not a backup name" in info.value.what


# Every tool's own naming scheme is a backup target without waiting for a listing.
TOOL_NAMES = [
    WALG,
    WALG_DELTA,
    "20261120-120000F",  # pgBackRest full
    "20261120-120000F_20261120-130000D",  # pgBackRest differential
    "20261120-120000F_20261120-130000I",  # pgBackRest incremental
    "20261120T120000",  # barman backup id, the basebackup format's default folder name
]
# Names people give backup folders: nothing in the grammar, so the listing decides.
USER_NAMES = ["20261207T204321Z", "nightly-2026-12-07", "2026-12-07_0300", "nightly", "pre_upgrade.v2", "7"]


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_tool_backup_names_are_backup_targets_at_once(name: str) -> None:
    target = RestoreTarget.parse(name)
    assert (target.kind, target.backup, target.tentative) == ("backup", name, False)
    assert str(target) == f"backup:{name}"
    assert target.refusal() is None


@pytest.mark.parametrize("name", USER_NAMES)
def test_user_chosen_backup_names_are_tentative_backup_targets(name: str) -> None:
    target = RestoreTarget.parse(name)
    assert (target.kind, target.backup, target.tentative) == ("backup", name, True)
    assert isinstance(target.refusal(), TargetError)
    spelled = RestoreTarget.parse(f"backup:{name}")  # the unambiguous spelling: never tentative
    assert (spelled.backup, spelled.tentative, spelled.refusal()) == (name, False, None)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("latest", "latest"),  # a folder named latest needs backup:latest
        ("immediate", "immediate"),
        ("oldest", "oldest"),
        ("2026-12-07T20:43:21Z", "time"),  # a valid time is a time, whatever the folders are called
        ("lsn:0/3000148", "lsn"),
        ("xid:5", "xid"),
        ("name:nightly", "name"),
        ("backup:latest", "backup"),
    ],
)
def test_keywords_times_and_prefixed_targets_keep_their_meaning(text: str, kind: str) -> None:
    target = RestoreTarget.parse(text)
    assert (target.kind, target.tentative, target.refusal()) == (kind, False, None)


def test_default_origin_is_the_cli_flag() -> None:
    with pytest.raises(TargetError, match=r"\(from --restore-target\)"):
        RestoreTarget.parse("nonsense here")
    assert "(from --restore-target)" in str(RestoreTarget.parse("nonsense").refusal())


def test_error_pickles_with_its_message() -> None:
    with pytest.raises(TargetError) as info:
        RestoreTarget.parse("2026-11-20 12:00:00", origin="ini restore_target")
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is TargetError
    assert str(clone) == str(info.value)
    assert (clone.what, clone.checked, clone.fix) == (info.value.what, info.value.checked, info.value.fix)


def test_error_has_no_chained_noise() -> None:
    # Users see the message, not an internal ValueError from int() or datetime().
    for text in ("lsn:zz", "2026-02-30T00:00:00Z"):
        with pytest.raises(TargetError) as info:
            RestoreTarget.parse(text)
        assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/3000148", 0x3000148),
        ("1/0", 1 << 32),
        ("16/B374D848", 0x16B374D848),
        ("16/b374d848", 0x16B374D848),
        (" 0/1 ", 1),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value
    assert parse_lsn(format_lsn(value)) == value


@pytest.mark.parametrize(
    "text", ["", "0", "/", "0/", "/0", "0/1/2", "g/0", "123456789/0", "0/123456789", "-1/0"]
)
def test_parse_lsn_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0/0"),
        (0x3000148, "0/3000148"),
        (0x16B374D848, "16/B374D848"),
        ((1 << 64) - 1, "FFFFFFFF/FFFFFFFF"),
    ],
)
def test_format_lsn(value: int, text: str) -> None:
    assert format_lsn(value) == text


@pytest.mark.parametrize("value", [-1, 1 << 64])
def test_format_lsn_refuses_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        format_lsn(value)
