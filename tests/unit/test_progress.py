"""Progress lines: a live line on a terminal (a real pty), a line every N seconds elsewhere, never
more often, nothing for a phase shorter than one interval, and what each line says."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

from pytest_pgrestore.restore._fetch import FetchStats
from pytest_pgrestore.restore._progress import Progress, _fetch_line, _replay_line


def read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_auto_on_a_terminal_is_one_live_line_ending_in_a_summary(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    master, slave = os.openpty()
    try:
        p = Progress("auto", label="pgrestore restore[latest]", fd=slave)
        assert p.live
        stats = FetchStats(concurrency=4, part_size=8 << 20)
        watch = p.fetch(stats, total=100 << 20)
        stats.add(network=50 << 20)
        wait_until(lambda: watch.printed)
        watch.close()
        out = read_all(master)
    finally:
        os.close(master)
        os.close(slave)
    assert "\x1b[K" in out  # rewritten in place
    assert out.rstrip("\r\n").rsplit("\r", 1)[-1].startswith("\x1b[Kpgrestore restore[latest]: fetch 52.4 MB")
    assert out.endswith("\n") and out.count("\n") <= 3  # one line per update at most, a summary at the end


def test_auto_elsewhere_prints_a_line_every_interval_and_nothing_for_a_short_phase():
    r, w = os.pipe()
    try:
        p = Progress(0.05, label="x", fd=w)
        assert not p.live and p.interval == 0.05
        stats = FetchStats(concurrency=4, part_size=8 << 20)
        watch = p.fetch(stats, total=None)
        wait_until(lambda: watch.printed)
        watch.close()
        lines = read_all(r).splitlines()
        assert lines and all(line.startswith("x: fetch ") for line in lines)
        assert not any("\r" in line or "\x1b" in line for line in lines)

        quiet = Progress(3600.0, label="x", fd=w).fetch(stats, total=None)
        quiet.close()  # shorter than one interval: not a word
        assert read_all(r) == ""
    finally:
        os.close(r)
        os.close(w)


def test_auto_under_xdist_is_never_live(monkeypatch):
    master, slave = os.openpty()
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")  # xdist draws its own live status line
        p = Progress.for_settings(SimpleNamespace(progress="auto"), label="x")
        assert Progress("auto", fd=slave, in_worker=True).live is False
        assert p.live is False
    finally:
        os.close(master)
        os.close(slave)


def test_off_is_silent():
    r, w = os.pipe()
    try:
        p = Progress("off", fd=w)
        assert not p.enabled and p.fetch(FetchStats(concurrency=1, part_size=1), total=1) is None
    finally:
        os.close(r)
        os.close(w)


def test_the_fetch_line_says_bytes_share_rate_eta_and_the_cache():
    stats = FetchStats(concurrency=4, part_size=8 << 20)
    stats.add(network=300_000_000, cache=100_000_000)
    line = _fetch_line(stats, 800_000_000, time.monotonic() - 4.0)
    assert line.startswith("400.0 MB of 800.0 MB (50%), ")
    assert "MB/s" in line and "ETA 4s" in line and "100.0 MB from the cache" in line


def test_the_replay_line_places_replay_in_the_planned_lsn_range():
    plan = SimpleNamespace(segments=[f"00000001000000000000{n:04X}" for n in range(0x10, 0x20)])
    spool = SimpleNamespace(position=7)
    line = _replay_line(spool, plan, 16 << 20, time.monotonic() - 2.0, 3)
    assert line.startswith("at 0/17000000 in 0/10000000..0/20000000 (50%, segment 8 of 16)")
    assert "MB/s" in line and "ETA " in line
