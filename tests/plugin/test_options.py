"""Options of the plugin, checked without restoring anything.

Precedence is CLI > env > ini > WAL-G's own variables (source only) > default; the report header
names every effective value's origin; every bad value is a one-paragraph usage error (exit 4,
no traceback) that names where the value came from.  The inner runs are in-process: they stop
at configure or collection time, long before a restore.
"""

from __future__ import annotations

import pytest

from pytest_pgrestore.settings._options import OPTIONS


def header(pytester: pytest.Pytester, *args: str) -> list[str]:
    """The ``pgrestore:`` lines of the report header, from a configured (not run) session."""
    config = pytester.parseconfigure(*args)
    blocks = config.hook.pytest_report_header(config=config, start_path=config.rootpath)
    lines = [line for block in blocks for line in ([block] if isinstance(block, str) else block)]
    return [line for line in lines if line.startswith("pgrestore: ")]


def usage_error(pytester: pytest.Pytester, *args: str) -> str:
    """Run, expect exit 4 with a single-paragraph ``ERROR:`` and no traceback; return its text."""
    result = pytester.runpytest(*args)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output
    error = "\n".join(result.errlines).strip()
    assert error.startswith("ERROR: "), output
    assert "\n\n" not in error, f"more than one paragraph:\n{error}"
    return error


# -- precedence, seen in the report header ------------------------------------------------
INI_TARGET = "restore_target = lsn:0/3000148"
INI_SOURCE = "restore_source = /srv/ini-backups"


@pytest.mark.parametrize(
    "args, env, ini, expected",
    [
        pytest.param(
            ["--restore-target=immediate"],
            {"PGRESTORE_TARGET": "oldest"},
            INI_TARGET,
            "restore-target: immediate (from cli --restore-target)",
            id="target-cli-beats-env-and-ini",
        ),
        pytest.param(
            [],
            {"PGRESTORE_TARGET": "oldest"},
            INI_TARGET,
            "restore-target: oldest (from env PGRESTORE_TARGET)",
            id="target-env-beats-ini",
        ),
        pytest.param(
            [], {}, INI_TARGET, "restore-target: lsn:0/3000148 (from ini restore_target)", id="target-ini"
        ),
        pytest.param(
            [],
            {"PGRESTORE_TARGET": ""},
            INI_TARGET,
            "restore-target: lsn:0/3000148 (from ini restore_target)",
            id="target-empty-env-counts-as-unset",
        ),
        pytest.param([], {}, "", "restore-target: latest (from default)", id="target-default"),
        pytest.param(
            ["--restore-source=s3://cli-bucket/pg"],
            {"PGRESTORE_SOURCE": "s3://env-bucket/pg", "WALG_S3_PREFIX": "s3://walg-bucket/pg"},
            INI_SOURCE,
            "restore-source: s3://cli-bucket/pg (from cli --restore-source)",
            id="source-cli",
        ),
        pytest.param(
            [],
            {"PGRESTORE_SOURCE": "s3://env-bucket/pg", "WALG_S3_PREFIX": "s3://walg-bucket/pg"},
            INI_SOURCE,
            "restore-source: s3://env-bucket/pg (from env PGRESTORE_SOURCE)",
            id="source-env-beats-ini-and-walg",
        ),
        pytest.param(
            [],
            {"WALG_S3_PREFIX": "s3://walg-bucket/pg"},
            INI_SOURCE,
            "restore-source: file:///srv/ini-backups (from ini restore_source)",
            id="source-ini-beats-walg",
        ),
        pytest.param(
            [],
            {"WALG_S3_PREFIX": "s3://walg-bucket/pg"},
            "",
            "restore-source: s3://walg-bucket/pg (from env WALG_S3_PREFIX)",
            id="source-walg",
        ),
        pytest.param(
            [],
            {"WALG_FILE_PREFIX": "/var/lib/walg"},
            "",
            "restore-source: file:///var/lib/walg (from env WALG_FILE_PREFIX)",
            id="source-walg-file",
        ),
        pytest.param([], {}, "", "restore-source: none configured (from default)", id="source-none"),
    ],
)
def test_precedence_is_cli_env_ini_walg_default(pytester, monkeypatch, args, env, ini, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    assert f"pgrestore: {expected}" in header(pytester, *args)


def test_walg_variables_only_supply_the_source(pytester, monkeypatch):
    monkeypatch.setenv("WALG_S3_PREFIX", "s3://walg-bucket/pg")
    lines = header(pytester)
    assert [line for line in lines if "WALG" in line] == [
        "pgrestore: restore-source: s3://walg-bucket/pg (from env WALG_S3_PREFIX)"
    ]


def test_header_shows_each_effective_value_and_its_origin(pytester, monkeypatch):
    monkeypatch.setenv("PGRESTORE_TIMEOUT", "90m")
    monkeypatch.setenv("PGRESTORE_USER", "app_ro")
    pytester.makeini("[pytest]\nrestore_dbname = app\nrestore_target = oldest\n")
    lines = header(pytester, "--restore-keep=always", "--restore-source=/srv/backups")
    for expected in [
        "restore-source: file:///srv/backups (from cli --restore-source)",
        "restore-target: oldest (from ini restore_target)",
        "restore-keep: always (from cli --restore-keep)",
        "restore-timeout: 1h30m (from env PGRESTORE_TIMEOUT)",
        "restore-user: app_ro (from env PGRESTORE_USER)",
        "restore-dbname: app (from ini restore_dbname)",
    ]:
        assert f"pgrestore: {expected}" in lines


def test_header_is_printed_by_a_collect_only_run(pytester, monkeypatch):
    monkeypatch.setenv("PGRESTORE_TARGET", "oldest")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--co")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "pgrestore: restore-source: none configured (from default)",
            "pgrestore: restore-target: oldest (from env PGRESTORE_TARGET)",
        ]
    )


def test_help_lists_every_option_with_its_env_var_and_ini_key(pytester):
    result = pytester.runpytest("--help")
    assert result.ret == pytest.ExitCode.OK
    text = " ".join(result.stdout.str().split())  # argparse wraps help text anywhere
    assert "restore drills (pytest-pgrestore):" in text
    for spec in OPTIONS:
        switch = spec.default in ("true", "false") or spec.const is not None  # --restore-plan-only [PLAN_ONLY]
        assert (f"{spec.cli_flag}=[{spec.name.upper()}]" if switch else f"{spec.cli_flag}={spec.name.upper()}") in text
        assert f"env {spec.env_var}" in text
        assert f"{spec.ini_key} (string)" in text
    assert "(default: latest; env PGRESTORE_TARGET; ini restore_target)" in text


# -- bad values: usage error, exit 4, no traceback ----------------------------------------
FORMATS = "auto, basebackup, walg, pgbackrest, barman"


@pytest.mark.parametrize(
    "args, env, ini, expected",
    [
        pytest.param(
            ["--restore-format=zip"],
            {},
            "",
            ["argument --restore-format: invalid choice: 'zip'", *FORMATS.split(", ")],
            id="format-cli",
        ),
        pytest.param(
            [],
            {"PGRESTORE_FORMAT": "zip"},
            "",
            ["invalid value 'zip' (from env PGRESTORE_FORMAT)", f"pick one of {FORMATS}"],
            id="format-env",
        ),
        pytest.param(
            ["--restore-target=foo:bar baz"],  # foo:bar alone could name a backup: refused after listing
            {},
            "",
            [
                "invalid restore target 'foo:bar baz' (from --restore-target)",
                "unknown prefix 'foo:'",
                "lsn:X/Y",
            ],
            id="target-malformed",
        ),
        pytest.param(
            ["--restore-target=2026-11-20 12:00:00"],  # with a T: after listing (test_bare_backup_names.py)
            {},
            "",
            ["has no UTC offset", "fix: add Z for UTC: 2026-11-20T12:00:00Z"],
            id="target-naive-timestamp",
        ),
        pytest.param(
            ["--restore-target=LATEST"],
            {},
            "",
            [
                "LATEST is ambiguous",
                "the keyword latest replays all WAL",
                "WAL-G's LATEST is the newest backup",
                "use latest to replay all archived WAL, or immediate",
            ],
            id="target-bare-LATEST",
        ),
        pytest.param(
            ["--restore-target="],
            {"PGRESTORE_TARGET": "oldest"},
            "",
            ["invalid restore target", "(from --restore-target): it is empty"],
            id="target-empty-cli-value-is-not-a-fallthrough",
        ),
        pytest.param(
            [],
            {"PGRESTORE_TARGET": "yesterday noon"},
            "",
            ["invalid restore target 'yesterday noon' (from env PGRESTORE_TARGET)"],
            id="target-env",
        ),
        pytest.param(
            ["--restore-source=s3://"],
            {},
            "",
            [
                "invalid restore source: the bucket name is empty (from --restore-source)",
                "s3://BUCKET/PREFIX",
            ],
            id="source-s3-without-bucket",
        ),
        pytest.param(
            ["--restore-source=gs://bucket"],
            {},
            "",
            ["gs:// is not supported (supported: s3://, file://) (from --restore-source)"],
            id="source-gs",
        ),
        pytest.param(
            ["--restore-source=backups/pg"],
            {},
            "",
            ["it is neither a URL nor an absolute path (from --restore-source)", "file:///var/backups/pg"],
            id="source-relative-path",
        ),
        pytest.param(
            [],
            {"WALG_S3_PREFIX": "s3://"},
            "",
            ["the bucket name is empty (from env WALG_S3_PREFIX)"],
            id="source-walg-env",
        ),
        pytest.param(
            ["--restore-timeout=5x"],
            {},
            "",
            ["invalid duration '5x' (from --restore-timeout)", "1h30m"],
            id="duration-cli",
        ),
        pytest.param(
            [],
            {"PGRESTORE_TIMEOUT": "-3h"},
            "",
            ["invalid duration '-3h' (from env PGRESTORE_TIMEOUT)"],
            id="duration-env",
        ),
        pytest.param(
            [],
            {},
            "restore_keep = sometimes",
            ["invalid value 'sometimes' (from ini restore_keep)", "never | on-failure | always"],
            id="keep-ini",
        ),
    ],
)
def test_bad_option_is_a_usage_error(pytester, monkeypatch, args, env, ini, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_nothing(): pass")
    error = usage_error(pytester, *args)
    for text in expected:
        assert text in error


@pytest.mark.parametrize(
    "marker, expected",
    [
        pytest.param(
            'restore_target("LATEST")',
            "test_marked.py::test_drill: invalid restore target 'LATEST' (from marker restore_target target=)",
            id="target",
        ),
        pytest.param(
            'restore_target("latest", source="gs://bucket")',
            "gs:// is not supported (supported: s3://, file://) (from marker restore_target source=)",
            id="source",
        ),
        pytest.param(
            'restore_target("latest", srouce="s3://bucket/pg")',
            "test_marked.py::test_drill: unknown restore setting srouce (from marker restore_target)",
            id="unknown-keyword",
        ),
    ],
)
def test_bad_marker_argument_is_a_usage_error(pytester, marker, expected):
    pytester.makepyfile(
        test_marked=f"""
        import pytest

        @pytest.mark.{marker}
        def test_drill(restored_db):
            pass

        def test_plain():
            pass
        """
    )
    assert expected in usage_error(pytester)
