"""Settings of issue 7 (fetch concurrency, cache, progress) and the WAL spool's window."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_pgrestore.errors import UsageError
from pytest_pgrestore.restore._cache import default_cache_dir
from pytest_pgrestore.restore._spool import WalSpool
from pytest_pgrestore.settings._options import resolve_settings


def settings(**cli):
    return resolve_settings(cli=cli, env={}, ini={})


def test_defaults():
    s = settings()
    assert (s.fetch_concurrency, s.cache, s.cache_counts, s.progress) == (8, None, False, "auto")


@pytest.mark.parametrize(("value", "expected"), [("off", None), ("on", default_cache_dir()),
                                                 ("/var/cache/pgr", Path("/var/cache/pgr"))])
def test_cache(value, expected):
    assert settings(cache=value).cache == expected


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("live", "live"), ("off", "off"),
                                                 ("30s", 30.0), ("1m", 60.0)])
def test_progress(value, expected):
    assert settings(progress=value).progress == expected


@pytest.mark.parametrize(("name", "value", "accepted"), [
    ("fetch_concurrency", "0", "1 to 64"), ("fetch_concurrency", "65", "1 to 64"), ("fetch_concurrency", "x", "1 to 64"),
    ("cache", "relative/dir", "absolute directory"), ("progress", "sometimes", "auto, live, off")])
def test_invalid_values_name_their_origin_and_the_syntax(name, value, accepted):
    with pytest.raises(UsageError) as err:
        settings(**{name: value})
    assert f"--restore-{name.replace('_', '-')}" in str(err.value) and accepted in str(err.value)


def test_report_lines_show_the_cache_and_progress():
    text = "\n".join(settings(cache="/c", progress="30s").report_lines())
    assert "restore-cache: /c (from cli --restore-cache)" in text and "restore-progress: 30s" in text


@pytest.mark.parametrize(("segment", "window"), [(16 << 20, 64), (64 << 20, 32), (1 << 30, 2), (None, 64)])
def test_the_spool_window_is_64_segments_or_2_gib(tmp_path, segment, window):
    plan = SimpleNamespace(segments=[], segment_keys={}, backup=SimpleNamespace(segment_size=segment))
    assert WalSpool(None, plan, tmp_path / "spool", owner=None).window == window
