"""The formatting helpers, pinned to what their callers printed before they were shared (issue 17)."""

from __future__ import annotations

import pytest

from pytest_pgrestore._fmt import (
    decimal_bytes,
    human_bytes,
    human_duration,
    option_duration,
    redact_userinfo,
    short_duration,
)
from pytest_pgrestore.settings._options import parse_duration


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
    (16 << 20, "16.0 MiB"), (3 << 30, "3.0 GiB"), (5 << 40, "5.0 TiB"), (2048 << 40, "2048.0 TiB"),
    (512.7, "513 B"),
])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (100, "100 B"), (1 << 20, "1.0 MiB"), (3 << 30, "3.0 GiB"), (2 << 40, "2048.0 GiB"),
])
def test_human_bytes_capped_at_gib_for_the_evidence_report(n, text):
    assert human_bytes(n, largest="GiB") == text


def test_human_bytes_counts_a_negative_size_by_its_magnitude():
    assert human_bytes(-5000) == "-4.9 KiB"


@pytest.mark.parametrize(("n", "text"), [
    (None, "?"), (0, "0.0 MB"), (12_345_678, "12.3 MB"), (999_999_999, "1000.0 MB"), (1e9, "1.00 GB"),
    (2.5e9, "2.50 GB"),
])
def test_decimal_bytes(n, text):
    assert decimal_bytes(n) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0, "0s"), (59, "59s"), (60, "1m"), (90, "1m30s"), (3600, "1h"), (3601, "1h1s"),
    (5400, "1h30m"), (86400, "1d"), (86460, "1d1m"), (2 * 86400 + 3 * 3600, "2d3h"), (1.5, "1.5s"),
    (90.25, "90.25s"),
])
def test_option_duration(seconds, text):
    assert option_duration(seconds) == text


@pytest.mark.parametrize("text", ["90s", "1h30m", "2d", "1d1m", "45m"])
def test_option_duration_reads_back(text):
    seconds = parse_duration(text, origin="test")
    assert parse_duration(option_duration(seconds), origin="test") == seconds


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.9, "0s"), (59.99, "59s"), (60, "1m"), (90.5, "1m30s"), (3601, "1h1s"), (86460, "1d1m"),
    (2 * 86400 + 3 * 3600 + 5, "2d3h5s"), (-5, "-5s"),
])
def test_human_duration_truncates_to_whole_seconds(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.4, "0s"), (0.5, "1s"), (59.4, "59s"), (59.5, "1m00s"), (185, "3m05s"), (3599.5, "1h00m"),
    (3720, "1h02m"), (90000, "25h00m"),
])
def test_short_duration_rounds_for_an_eta(seconds, text):
    assert short_duration(seconds) == text


@pytest.mark.parametrize("text, shown", [
    ("https://ops:hunter2-secret@wiki.example.com/runbook", "https://ops:<redacted>@wiki.example.com/runbook"),
    ("see http://a:b@127.0.0.1:9000/x and s3://k:s/ecret@bucket", "see http://a:<redacted>@127.0.0.1:9000/x and "
     "s3://k:<redacted>@bucket"),
    ("https://wiki.example.com/runbook?user=a:b", "https://wiki.example.com/runbook?user=a:b"),  # twin: no userinfo
    ("http://user@host/", "http://user@host/"),  # a user name alone is no secret
])
def test_a_password_in_any_url_is_redacted(text, shown):
    assert redact_userinfo(text) == shown


def test_the_settings_header_and_the_evidence_never_show_a_url_password():
    from pytest_pgrestore.evidence._record import redact
    from pytest_pgrestore.settings._options import resolve_settings

    s = resolve_settings(cli={"source": "/var/backups/pg", "runbook_url": "https://ops:hunter2-secret@wiki/rb"},
                         env={}, ini={})
    header = "\n".join(s.report_lines())
    assert "hunter2-secret" not in header and "<redacted>" in header
    assert redact({"runbook": "https://ops:hunter2-secret@wiki/rb"}, env={}) == {"runbook": "https://ops:<redacted>@wiki/rb"}
