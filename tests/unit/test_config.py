"""config: durations, source URLs, and settings resolved with their provenance."""

from __future__ import annotations

import os
import pickle
import tempfile
from datetime import timedelta
from pathlib import Path, PurePosixPath

import pytest

from pytest_pgrestore.errors import NoSourceConfigured, UsageError
from pytest_pgrestore.settings._options import (
    OPTIONS,
    WALG_SOURCE_VARS,
    OptionSpec,
    Settings,
    Source,
    parse_duration,
    parse_source,
    resolve_settings,
)
from pytest_pgrestore.settings._target import RestoreTarget, TargetError

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def resolve(*, overrides=None, cli=None, env=None, ini=None) -> Settings:
    return resolve_settings(overrides=overrides, cli=cli or {}, env=env or {}, ini=ini or {})


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("45m", 2700),
        ("6h", 21600),
        ("2d", 172800),
        ("1h30m", 5400),
        ("1d2h3m4s", 93784),
        ("1h 30m", 5400),
        (" 10m ", 600),
        ("0h5m", 300),
        ("0001", 1),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text, origin="--restore-timeout") == float(seconds)
    assert isinstance(parse_duration(text, origin="x"), float)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "invalid duration ''"),
        ("   ", "invalid duration"),
        ("0", "must be positive"),
        ("0s", "must be positive"),
        ("0h0m", "must be positive"),
        ("-5", "invalid duration"),
        ("-5m", "invalid duration"),
        ("+5", "invalid duration"),
        ("1.5h", "invalid duration"),
        ("5ms", "invalid duration"),
        ("5H", "invalid duration"),
        ("30m1h", "invalid duration"),  # units run largest first
        ("1h1h", "invalid duration"),
        ("h", "invalid duration"),
        ("soon", "invalid duration"),
        ("١٠", "invalid duration"),  # non-ASCII digits
    ],
)
def test_parse_duration_refuses(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text, origin="ini restore_timeout")
    assert problem in info.value.what
    assert "(from ini restore_timeout)" in str(info.value)
    assert "1h30m" in info.value.checked


# --- sources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields", "canonical"),
    [
        ("s3://bucket/prefix", {"scheme": "s3", "bucket": "bucket", "prefix": "prefix"}, "s3://bucket/prefix"),
        ("s3://bucket", {"scheme": "s3", "bucket": "bucket", "prefix": ""}, "s3://bucket"),
        ("s3://bucket/", {"scheme": "s3", "bucket": "bucket", "prefix": ""}, "s3://bucket"),
        ("S3://bucket/a/b/", {"scheme": "s3", "bucket": "bucket", "prefix": "a/b"}, "s3://bucket/a/b"),
        ("s3://my.bucket-1//deep/path//", {"bucket": "my.bucket-1", "prefix": "deep/path"},
         "s3://my.bucket-1/deep/path"),
        ("s3://Legacy_Bucket/p", {"bucket": "Legacy_Bucket", "prefix": "p"}, "s3://Legacy_Bucket/p"),
        ("s3://bucket/users@example", {"bucket": "bucket", "prefix": "users@example"},
         "s3://bucket/users@example"),
        ("s3://bucket/pg?stanza=main", {"bucket": "bucket", "prefix": "pg", "selector": {"stanza": "main"}},
         "s3://bucket/pg?stanza=main"),
        ("s3://bucket?server=pg-1", {"bucket": "bucket", "prefix": "", "selector": {"server": "pg-1"}},
         "s3://bucket?server=pg-1"),
        ("s3://bucket/pg?", {"bucket": "bucket", "prefix": "pg", "selector": {}}, "s3://bucket/pg"),
        ("file:///var/backups", {"scheme": "file", "path": Path("/var/backups"), "bucket": None},
         "file:///var/backups"),
        ("file://localhost/var/backups", {"scheme": "file", "path": Path("/var/backups")},
         "file:///var/backups"),
        ("file:/var/backups", {"scheme": "file", "path": Path("/var/backups")}, "file:///var/backups"),
        ("FILE:///var/backups/", {"scheme": "file", "path": Path("/var/backups")}, "file:///var/backups"),
        ("file:///var/my%20backups", {"path": Path("/var/my backups")}, "file:///var/my%20backups"),
        ("file:///var/lib/pgbackrest?stanza=main", {"path": Path("/var/lib/pgbackrest"),
         "selector": {"stanza": "main"}}, "file:///var/lib/pgbackrest?stanza=main"),
        ("/var/backups", {"scheme": "file", "path": Path("/var/backups")}, "file:///var/backups"),
        ("  /var/./backups/../backups//x/ ", {"path": Path("/var/backups/x")}, "file:///var/backups/x"),
        ("//var/backups", {"path": Path("/var/backups")}, "file:///var/backups"),
        ("/srv/barman?server=pg", {"path": Path("/srv/barman"), "selector": {"server": "pg"}},
         "file:///srv/barman?server=pg"),
        ("/", {"path": Path("/")}, "file:///"),
    ],
)  # fmt: skip
def test_parse_source(text: str, fields: dict, canonical: str) -> None:
    source = parse_source(text, origin="--restore-source")
    for key, value in fields.items():
        assert getattr(source, key) == value, key
    assert source.raw == text.strip()
    assert source.describe() == canonical == str(source)
    assert parse_source(canonical, origin="x") == source  # canonical form round-trips
    hash(source)  # usable as a cache key


S3_HINT = "supported: s3://, file://"


@pytest.mark.parametrize(
    ("text", "problem", "hint"),
    [
        ("", "it is empty", "s3://"),
        ("  ", "it is empty", "s3://"),
        ("backups/pg", "neither a URL nor an absolute path", "absolute path"),
        ("./backups", "neither a URL nor an absolute path", "absolute path"),
        ("~/backups", "neither a URL nor an absolute path", "~ is not expanded"),
        ("s3:/bucket/prefix", "neither a URL nor an absolute path", "s3://BUCKET/PREFIX"),
        ("file:backups", "neither a URL nor an absolute path", "absolute path"),
        ("gs://bucket/p", "gs:// is not supported (supported: s3://, file://)", "S3 or a local directory"),
        ("azure://c/p", "azure:// is not supported", "S3"),
        ("az://c/p", "az:// is not supported", "S3"),
        ("swift://c/p", "swift:// is not supported", "S3"),
        ("oss://c/p", "oss:// is not supported", "S3"),
        ("ssh://host/p", "ssh:// is not supported", "S3"),
        ("sftp://host/p", "sftp:// is not supported", "S3"),
        ("http://minio:9000/bucket", "http:// is not supported", "AWS_ENDPOINT_URL"),
        ("https://s3.amazonaws.com/bucket", "https:// is not supported", "AWS_ENDPOINT_URL"),
        ("s3a://bucket/p", "s3a:// is not supported", "write s3://BUCKET/PREFIX"),
        ("s3n://bucket/p", "s3n:// is not supported", "write s3://BUCKET/PREFIX"),
        ("s3://", "bucket name is empty", "s3://BUCKET/PREFIX"),
        ("s3:///prefix", "bucket name is empty", "s3://BUCKET/PREFIX"),
        ("s3://ab/p", "'ab' is not a valid bucket name", "3-63"),
        ("s3://-bucket/p", "not a valid bucket name", "3-63"),
        ("s3://bucket-/p", "not a valid bucket name", "3-63"),
        ("s3://my..bucket/p", "not a valid bucket name", "3-63"),
        ("s3://" + "b" * 64 + "/p", "not a valid bucket name", "3-63"),
        ("s3://buck et/p", "not a valid bucket name", "3-63"),
        ("s3://bucket:9000/p", "has no port", "AWS_ENDPOINT_URL"),
        ("s3://bucket/p?region=eu", "unknown query key 'region'", "stanza (pgBackRest) and server (barman)"),
        ("s3://bucket/p?stanza=a&server=b", "give one selector", "keep only one"),
        ("s3://bucket/p?stanza=a&stanza=b", "give one selector", "keep only one"),
        ("s3://bucket/p?stanza=", "stanza= needs a name", "?stanza=main"),
        ("s3://bucket/p?stanza", "stanza= needs a name", "?stanza=main"),
        ("s3://bucket/p?server=a/b", "server= needs a name", "?server=main"),
        ("s3://bucket/p#frag", "#fragment", "remove everything from #"),
        ("file://backups/pg", "name no other host", "did you mean file:///backups/pg?"),
        ("file://host.example/srv", "name no other host", "file:///host.example/srv"),
        ("file://", "the path is relative", "absolute path"),
        ("file:///var/x%00y", "NUL byte", "remove it"),
        ("/var/backups?foo=bar", "unknown query key 'foo'", "stanza"),
    ],
)
def test_parse_source_refuses(text: str, problem: str, hint: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_source(text, origin="env PGRESTORE_SOURCE")
    err = info.value
    assert problem in err.what
    assert hint in err.fix or hint in err.what
    assert "(from env PGRESTORE_SOURCE)" in str(err)
    assert "s3://BUCKET[/PREFIX]" in err.checked  # the accepted syntax
    assert pickle.loads(pickle.dumps(err)).what == err.what


@pytest.mark.parametrize(
    "text",
    [
        f"s3://{KEY_ID}:{SECRET}@bucket/prefix",  # the secret holds "/" and "+"
        f"s3://{KEY_ID}:{SECRET.replace('/', '')}@bucket/prefix",
        f"s3://{KEY_ID}@bucket/prefix",
        f"S3://{KEY_ID}:{SECRET}@bucket",
        f"s3://{KEY_ID}:{SECRET}@bucket/p?stanza=main",
        f"s3://{KEY_ID}%3A{SECRET.replace('/', '%2F')}@bucket/prefix",
    ],
)
def test_credentials_in_the_url_are_refused_and_never_echoed(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_source(text, origin="env WALG_S3_PREFIX")
    message = str(info.value) + repr(info.value) + str(pickle.loads(pickle.dumps(info.value)))
    assert "carries credentials" in message
    assert "AWS_ACCESS_KEY_ID" in info.value.fix
    assert "(from env WALG_S3_PREFIX)" in message
    for piece in (KEY_ID, SECRET, SECRET[:8], SECRET[-8:], "bucket"):
        assert piece not in message


@pytest.mark.parametrize(
    "text",
    [f"ssh://{KEY_ID}:{SECRET}@host/p", f"gs://{KEY_ID}:{SECRET}@b/p", f"file://{KEY_ID}:{SECRET}@host/p"],
)
def test_other_urls_with_credentials_do_not_echo_them(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_source(text, origin="--restore-source")
    assert KEY_ID not in str(info.value) and SECRET[:8] not in str(info.value)


def test_source_repr_and_selector_are_safe() -> None:
    source = parse_source("s3://bucket/p?stanza=main", origin="x")
    assert source.selector == {"stanza": "main"}
    assert "bucket" in repr(source)


# --- the option table -------------------------------------------------------------------------


def test_option_table_names() -> None:
    names = [spec.name for spec in OPTIONS]
    assert len(set(names)) == len(names)
    assert [name for name in names if name in CORE_OPTIONS] == CORE_OPTIONS  # others follow, per feature


CORE_OPTIONS = [
        "source",
        "target",
        "format",
        "runtime",
        "dbname",
        "user",
        "keep",
        "timeout",
        "workdir",
        "timeline",
        "target_inclusive",
        "pg_bin",
        "plan_only",
        "image",
        "docker_network",
        "docker_mode",
]


def test_option_flags_ini_keys_and_env_vars() -> None:
    spec = next(spec for spec in OPTIONS if spec.name == "target_inclusive")
    assert spec.cli_flag == "--restore-target-inclusive"
    assert spec.dest == "restore_target_inclusive"
    assert spec.ini_key == "restore_target_inclusive"
    assert spec.env_var == "PGRESTORE_TARGET_INCLUSIVE"
    assert all(isinstance(spec, OptionSpec) and spec.help for spec in OPTIONS)


@pytest.mark.parametrize(
    ("name", "choices"),
    [
        ("format", ("auto", "basebackup", "walg", "pgbackrest", "barman")),
        ("runtime", ("local", "docker", "auto")),
        ("keep", ("never", "on-failure", "always")),
        ("docker_network", ("bridge", "host")),
        ("docker_mode", ("auto", "bind", "copy")),
    ],
)
def test_choices_are_declared_and_enforced(name: str, choices: tuple[str, ...]) -> None:
    spec = next(spec for spec in OPTIONS if spec.name == name)
    assert spec.choices == choices
    for choice in choices:
        assert getattr(resolve(cli={name: choice}), name) == choice
    with pytest.raises(UsageError) as info:
        resolve(cli={name: "bogus"})
    assert " | ".join(choices) in info.value.checked
    assert f"(from {spec.cli_flag})" in str(info.value)


def test_choice_case_gets_a_hint() -> None:
    with pytest.raises(UsageError) as info:
        resolve(env={"PGRESTORE_FORMAT": "WALG"})
    assert info.value.fix == "write walg"
    assert "(from env PGRESTORE_FORMAT)" in str(info.value)


# --- resolution -------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = resolve()
    assert settings.source is None
    assert settings.target == RestoreTarget.parse("latest")
    assert (settings.format, settings.runtime, settings.keep) == ("auto", "local", "never")
    assert (settings.dbname, settings.user) == ("postgres", "postgres")
    assert settings.timeout == 6 * 3600.0
    assert settings.workdir == Path(tempfile.gettempdir()) / f"pgrestore-{os.getuid()}"
    assert settings.timeline == "latest"
    assert settings.target_inclusive is True
    assert settings.pg_bin is None
    assert set(settings.origins) == {spec.name for spec in OPTIONS}
    assert set(settings.origins.values()) == {"default"}


def test_every_option_reads_every_layer() -> None:
    for spec in OPTIONS:
        value = {
            "source": "/srv/a",
            "target": "immediate",
            "timeout": "5m",
            "workdir": "/w",
            "pg_bin": "/b",
            "dbname": "app",
            "user": "me",
            "preload": "pg_stat_statements",
            "timeline": "2",
            "target_inclusive": "no",
            "format": "walg",
            "runtime": "local",
            "keep": "always",
            "image": "registry.example.com/pg:{major}-alpine",
            "docker_network": "host",
            "docker_mode": "copy",
            "plan_only": "yes",
            "negative_control": "yes",
            "report": "evidence/drill.json",
            "heartbeat_query": "select max(ts) from heartbeat",
            "max_rto": "1h",
            "max_rpo": "10m",
            "metrics": "/var/lib/node_exporter/pgrestore.prom",
            "alert_webhook": "https://hooks.example.com/T0/abc",
            "alert_pagerduty": "on",
            "runbook_url": "https://wiki.example.com/runbooks/restore",
            "checks": "hygiene",
            "fetch_concurrency": "4",
            "cache": "/var/cache/pgrestore",
            "cache_counts": "yes",
            "progress": "10s",
        }[spec.name]
        for layer, origin in (
            ("overrides", f"keyword {spec.name}="),
            ("cli", f"cli {spec.cli_flag}"),
            ("env", f"env {spec.env_var}"),
            ("ini", f"ini {spec.ini_key}"),
        ):
            key = spec.env_var if layer == "env" else spec.name
            settings = resolve(**{layer: {key: value}})
            assert settings.origins[spec.name] == origin
            assert getattr(settings, spec.name) == spec.parser(value, "x")


def test_precedence_overrides_cli_env_ini_walg_default() -> None:
    layers = {
        "overrides": {"source": "/o"},
        "cli": {"source": "/c"},
        "env": {
            "PGRESTORE_SOURCE": "/e",
            "WALG_S3_PREFIX": "s3://walg/p",
            "WALE_S3_PREFIX": "s3://wale/p",
            "WALG_FILE_PREFIX": "/walg-file",
        },
        "ini": {"source": "/i"},
    }
    assert resolve(**layers).source.describe() == "file:///o"
    del layers["overrides"]
    assert resolve(**layers).origins["source"] == "cli --restore-source"
    del layers["cli"]
    assert resolve(**layers).origins["source"] == "env PGRESTORE_SOURCE"
    del layers["env"]["PGRESTORE_SOURCE"]
    assert resolve(**layers).origins["source"] == "ini restore_source"
    del layers["ini"]
    settings = resolve(**layers)
    assert (settings.origins["source"], str(settings.source)) == ("env WALG_S3_PREFIX", "s3://walg/p")
    del layers["env"]["WALG_S3_PREFIX"]
    assert resolve(**layers).origins["source"] == "env WALE_S3_PREFIX"
    del layers["env"]["WALE_S3_PREFIX"]
    settings = resolve(**layers)
    assert (settings.origins["source"], str(settings.source)) == ("env WALG_FILE_PREFIX", "file:///walg-file")
    del layers["env"]["WALG_FILE_PREFIX"]
    assert resolve(**layers).source is None


def test_walg_variables_feed_only_the_source() -> None:
    settings = resolve(env={"WALG_S3_PREFIX": "s3://bkt/p", "WALG_COMPRESSION_METHOD": "lz4"})
    assert settings.origins["source"] == "env WALG_S3_PREFIX"
    assert settings.origins["format"] == "default"


def test_none_falls_through_but_empty_cli_is_a_value() -> None:
    assert resolve(cli={"target": None}, env={"PGRESTORE_TARGET": "immediate"}).target.kind == "immediate"
    with pytest.raises(TargetError) as info:
        resolve(cli={"target": ""}, env={"PGRESTORE_TARGET": "immediate"})
    assert "(from --restore-target)" in str(info.value)
    with pytest.raises(UsageError, match=r"\(from --restore-source\)"):
        resolve(cli={"source": ""}, env={"PGRESTORE_SOURCE": "/srv"})
    with pytest.raises(UsageError, match="keyword timeout="):
        resolve(overrides={"timeout": ""})


def test_empty_env_and_ini_count_as_unset() -> None:
    settings = resolve(
        env={"PGRESTORE_TARGET": "", "PGRESTORE_SOURCE": ""}, ini={"target": "oldest", "source": ""}
    )
    assert settings.target.kind == "oldest" and settings.origins["target"] == "ini restore_target"
    assert settings.source is None
    settings = resolve(env={"PGRESTORE_SOURCE": "", "WALG_S3_PREFIX": "", "WALG_FILE_PREFIX": "/srv/wal-g"})
    assert settings.origins["source"] == "env WALG_FILE_PREFIX"


def test_a_broken_lower_layer_is_never_read() -> None:
    settings = resolve(
        cli={"timeout": "1h"},
        env={"PGRESTORE_TIMEOUT": "garbage", "WALG_S3_PREFIX": "gs://x"},
        ini={"source": "/srv"},
    )
    assert settings.timeout == 3600.0


@pytest.mark.parametrize(
    ("layers", "origin"),
    [
        ({"env": {"PGRESTORE_TARGET": "2026-11-20 12:00:00"}}, "env PGRESTORE_TARGET"),
        ({"cli": {"format": "tar"}}, "--restore-format"),
        ({"ini": {"timeout": "6 hours"}}, "ini restore_timeout"),
        ({"env": {"WALG_S3_PREFIX": "gs://b/p"}}, "env WALG_S3_PREFIX"),
        ({"env": {"WALE_S3_PREFIX": "s3://"}}, "env WALE_S3_PREFIX"),
        ({"env": {"WALG_FILE_PREFIX": "relative/dir"}}, "env WALG_FILE_PREFIX"),
        ({"overrides": {"target": "Latest"}}, "keyword target="),
        ({"cli": {"workdir": "relative"}}, "--restore-workdir"),
        ({"env": {"PGRESTORE_PG_BIN": "bin"}}, "env PGRESTORE_PG_BIN"),
        ({"ini": {"timeline": "0"}}, "ini restore_timeline"),
        ({"ini": {"timeline": "newest"}}, "ini restore_timeline"),
        ({"cli": {"timeline": "4294967296"}}, "--restore-timeline"),
        ({"env": {"PGRESTORE_TARGET_INCLUSIVE": "maybe"}}, "env PGRESTORE_TARGET_INCLUSIVE"),
        ({"cli": {"dbname": ""}}, "--restore-dbname"),
        ({"cli": {"user": "u" * 64}}, "--restore-user"),
        ({"overrides": {"timeout": -1}}, "keyword timeout="),
        ({"overrides": {"timeout": 0}}, "keyword timeout="),
        ({"overrides": {"timeout": True}}, "keyword timeout="),
        ({"overrides": {"target_inclusive": 1}}, "keyword target_inclusive="),
        ({"overrides": {"timeline": True}}, "keyword timeline="),
        ({"overrides": {"source": 42}}, "keyword source="),
        ({"overrides": {"workdir": 42}}, "keyword workdir="),
    ],
)
def test_every_validation_error_names_its_origin(layers: dict, origin: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve(**layers)
    assert f"(from {origin})" in str(info.value)
    assert info.value.checked.startswith("accepted: ")
    assert info.value.fix
    clone = pickle.loads(pickle.dumps(info.value))
    assert (type(clone), str(clone)) == (type(info.value), str(info.value))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("TRUE", True),
        (" Yes ", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("Off", False),
    ],
)
def test_booleans(text: str, value: bool) -> None:
    assert resolve(cli={"target_inclusive": text}).target_inclusive is value


@pytest.mark.parametrize(
    ("text", "value"),
    [("latest", "latest"), ("current", "current"), ("1", "1"), ("007", "7"), ("4294967295", "4294967295")],
)
def test_timelines(text: str, value: str) -> None:
    assert resolve(ini={"timeline": text}).timeline == value


def test_typed_overrides() -> None:
    target = RestoreTarget.parse("xid:42")
    source = Source("s3", bucket="b", prefix="p")
    settings = resolve(
        overrides={
            "target": target,
            "source": source,
            "timeout": timedelta(minutes=2),
            "workdir": Path("/w/"),
            "timeline": 3,
            "target_inclusive": False,
            "pg_bin": PurePosixPath("/usr/lib/pg/bin"),
        },
    )
    assert settings.target is target and settings.source is source
    assert settings.timeout == 120.0 and isinstance(settings.timeout, float)
    assert settings.workdir == Path("/w") and settings.pg_bin == Path("/usr/lib/pg/bin")
    assert (settings.timeline, settings.target_inclusive) == ("3", False)
    assert resolve(overrides={"timeout": 1.5}).timeout == 1.5


def test_unknown_override_is_refused() -> None:
    with pytest.raises(UsageError) as info:
        resolve(overrides={"taget": "latest"})
    assert "unknown restore setting taget" in info.value.what
    assert "target" in info.value.checked


def test_override_origin_label() -> None:
    settings = resolve_settings(
        overrides={"target": "immediate"}, cli={}, env={}, ini={}, override_origin="marker pgrestore"
    )
    assert settings.origins["target"] == "marker pgrestore target="
    with pytest.raises(UsageError, match=r"from marker pgrestore target="):
        resolve_settings(
            overrides={"target": "x y"}, cli={}, env={}, ini={}, override_origin="marker pgrestore"
        )


def test_settings_snapshot_env_and_hide_it_from_repr() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "PGRESTORE_SOURCE": "s3://bkt/p"}
    settings = resolve(env=env)
    env["PGRESTORE_SOURCE"] = "changed"
    assert settings.env["PGRESTORE_SOURCE"] == "s3://bkt/p"
    assert settings.env["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert SECRET not in repr(settings)
    assert all(SECRET not in line for line in settings.report_lines())
    hash(settings)


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        resolve().timeout = 1.0  # type: ignore[misc]


# --- report, replace, require_source ----------------------------------------------------------


def test_report_lines() -> None:
    settings = resolve(
        cli={"target": "2026-11-20 12:00:00+02:00", "timeout": "90m"},
        env={"WALG_S3_PREFIX": "s3://bucket/prefix/", "AWS_SECRET_ACCESS_KEY": SECRET},
        ini={"target_inclusive": "off"},
    )
    lines = settings.report_lines()
    assert lines[:4] == [
        "restore-source: s3://bucket/prefix (from env WALG_S3_PREFIX)",
        "restore-target: 2026-11-20T12:00:00+02:00 (from cli --restore-target)",
        "restore-timeout: 1h30m (from cli --restore-timeout)",
        "restore-target-inclusive: false (from ini restore_target_inclusive)",
    ]
    # every other effective value is shown too, gathered on one line as defaults
    assert lines[4].startswith("defaults: restore-format=auto, restore-runtime=local")
    assert len(lines) == 5 and SECRET not in "".join(lines)


def test_report_lines_without_source() -> None:
    lines = resolve().report_lines()
    assert lines[:2] == [
        "restore-source: none configured (from default)",
        "restore-target: latest (from default)",
    ]
    assert "restore-keep=never" in lines[2] and "restore-timeout=6h" in lines[2]


def test_report_duration_formats() -> None:
    for given, shown in (("2d", "2d"), ("86461", "1d1m1s"), ("6h", "6h")):
        assert f"restore-timeout: {shown} " in resolve(env={"PGRESTORE_TIMEOUT": given}).report_lines()[2]
    assert "restore-timeout: 1.5s " in resolve(overrides={"timeout": 1.5}).report_lines()[2]


def test_replace_parses_and_records_origin() -> None:
    base = resolve(env={"PGRESTORE_SOURCE": "/srv"})
    changed = base.replace(target="xid:9", timeout="1m", source=None)
    assert changed.target == RestoreTarget.parse("xid:9") and changed.timeout == 60.0
    assert changed.origins["target"] == "keyword target=" and changed.origins["timeout"] == "keyword timeout="
    assert changed.origins["source"] == "env PGRESTORE_SOURCE" and changed.source == base.source
    assert base.target.kind == "latest" and base.origins["target"] == "default"  # the original is untouched
    marked = base.replace("marker pgrestore", target="immediate")
    assert marked.origins["target"] == "marker pgrestore target="
    with pytest.raises(TargetError, match=r"from marker pgrestore target="):
        base.replace("marker pgrestore", target="Immediate")
    with pytest.raises(UsageError, match="unknown restore setting nope"):
        base.replace(nope=1)


def test_require_source() -> None:
    source = resolve(cli={"source": "s3://bkt/p"}).require_source()
    assert source.describe() == "s3://bkt/p"


def test_require_source_explains_where_it_looked() -> None:
    settings = resolve()
    with pytest.raises(NoSourceConfigured) as info:
        settings.require_source()
    err = info.value
    assert err.what == "no backup source configured"
    assert err.checked == (
        "--restore-source, env PGRESTORE_SOURCE, ini restore_source, env WALG_S3_PREFIX, "
        "env WALE_S3_PREFIX, env WALG_FILE_PREFIX"
    )
    assert "--restore-source=s3://BUCKET/PREFIX" in err.fix and "PGRESTORE_SOURCE" in err.fix
    assert isinstance(err, UsageError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


def test_require_source_notes_empty_and_unsupported_variables() -> None:
    env = {
        "PGRESTORE_SOURCE": "",
        "WALG_S3_PREFIX": "",
        "WALG_GS_PREFIX": "gs://b/p",
        "WALG_DELTA_MAX_STEPS": "3",
    }
    with pytest.raises(NoSourceConfigured) as info:
        resolve(env=env).require_source()
    what = info.value.what
    assert "env PGRESTORE_SOURCE is set but empty" in what
    assert "env WALG_S3_PREFIX is set but empty" in what
    assert "env WALG_GS_PREFIX is set, but only S3 and local sources are supported" in what
    assert "gs://b/p" not in what and "WALG_DELTA_MAX_STEPS" not in what


def test_walg_list_is_exported() -> None:
    assert WALG_SOURCE_VARS == ("WALG_S3_PREFIX", "WALE_S3_PREFIX", "WALG_FILE_PREFIX")


# --- fetch concurrency: ours, else WAL-G's WALG_DOWNLOAD_CONCURRENCY (issue 17) -----------------


def test_fetch_concurrency_precedence_cli_env_ini_walg_default() -> None:
    cli = {"fetch_concurrency": "2"}
    env = {"PGRESTORE_FETCH_CONCURRENCY": "3", "WALG_DOWNLOAD_CONCURRENCY": "5"}
    ini = {"fetch_concurrency": "4"}
    steps = [
        ({"cli": cli, "env": env, "ini": ini}, 2, "cli --restore-fetch-concurrency"),
        ({"env": env, "ini": ini}, 3, "env PGRESTORE_FETCH_CONCURRENCY"),
        ({"env": {"WALG_DOWNLOAD_CONCURRENCY": "5"}, "ini": ini}, 4, "ini restore_fetch_concurrency"),
        ({"env": {"WALG_DOWNLOAD_CONCURRENCY": "5"}}, 5, "env WALG_DOWNLOAD_CONCURRENCY"),
        ({"env": {"WALG_DOWNLOAD_CONCURRENCY": ""}}, 8, "default"),
        ({}, 8, "default"),
    ]
    for layers, value, origin in steps:
        settings = resolve(**layers)
        assert (settings.fetch_concurrency, settings.origins["fetch_concurrency"]) == (value, origin), layers


def test_fetch_concurrency_from_walg_is_shown_with_its_origin() -> None:
    lines = resolve(env={"WALG_DOWNLOAD_CONCURRENCY": "3"}).report_lines()
    assert "restore-fetch-concurrency: 3 (from env WALG_DOWNLOAD_CONCURRENCY)" in lines
    assert "restore-fetch-concurrency=8" in resolve().report_lines()[-1]


@pytest.mark.parametrize("raw", ["0", "-2", "ten", "1.5", "65"])
def test_bad_walg_download_concurrency_is_refused_naming_the_variable(raw) -> None:
    with pytest.raises(UsageError) as info:
        resolve(env={"WALG_DOWNLOAD_CONCURRENCY": raw})
    assert info.value.what == f"invalid concurrency {raw!r} (from env WALG_DOWNLOAD_CONCURRENCY)"
    assert "1 to 64" in info.value.checked


def test_bad_walg_download_concurrency_is_not_read_when_ours_is_given() -> None:
    settings = resolve(cli={"fetch_concurrency": "4"}, env={"WALG_DOWNLOAD_CONCURRENCY": "x"})
    assert settings.fetch_concurrency == 4
