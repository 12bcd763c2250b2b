"""Progress of a long restore: the fetch (bytes, rate, ETA) and the replay (position in the
planned WAL range, rate, ETA).

``--restore-progress`` chooses where it goes:

* ``auto`` (default): a live line on a terminal (rewritten in place, at most twice a second);
  a line every 30 s otherwise (CI logs) and under pytest-xdist (whose own status line is live);
* ``live`` / ``off``;
* a duration (``10s``, ``1m``): a line every that often, never live.

A phase shorter than one interval prints nothing in line mode; a live line ends with one
summary line.  Lines go to the terminal pytest was started on (a descriptor kept before output
capture begins), so they show while a restore item runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from .._fmt import decimal_bytes, short_duration

__all__ = ["Progress", "keep_terminal", "DEFAULT_INTERVAL"]

DEFAULT_INTERVAL = 30.0
_LIVE_EVERY = 0.5
_terminal_fd: int | None = None


def keep_terminal() -> None:
    """Keep a descriptor of stderr as it is now: called before pytest starts capturing output."""
    global _terminal_fd
    if _terminal_fd is None:
        try:
            _terminal_fd = os.dup(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):  # no real stderr (embedded, pytester inline)
            _terminal_fd = -1


def _out_fd() -> int | None:
    if _terminal_fd is not None:
        return _terminal_fd if _terminal_fd >= 0 else None
    try:
        return sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):
        return None


class Progress:
    """Where progress lines go; :meth:`fetch` and :meth:`replay` watch one phase each."""

    def __init__(self, mode: str | float = "auto", *, label: str = "pgrestore", fd: int | None = None,
                 in_worker: bool = False) -> None:
        self.label = label
        self.fd = _out_fd() if fd is None else fd
        self.live, self.interval = _resolve(mode, self.fd, in_worker)

    @classmethod
    def for_settings(cls, settings, *, label: str) -> Progress:
        worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
        return cls(getattr(settings, "progress", "auto"), label=label, in_worker=worker)

    @property
    def enabled(self) -> bool:
        return self.fd is not None and (self.live or self.interval is not None)

    def fetch(self, stats, *, total: int | None) -> _Watch | None:
        """``stats.bytes_total`` grows as the backup arrives; ``total`` is its stored size."""
        if not self.enabled:
            return None
        return _Watch(self, lambda started: _fetch_line(stats, total, started), "fetch").start()

    def replay(self, spool, plan, *, segment_size: int | None) -> _Watch | None:
        """The highest planned segment replay has asked the spool for, against the plan."""
        if not self.enabled or not plan.segments:
            return None
        first = max(spool.position, 0)
        return _Watch(self, lambda started: _replay_line(spool, plan, segment_size, started, first),
                      "replay").start()

    def write(self, text: str) -> None:
        if self.fd is None:  # a write failed before: the terminal is gone, the restore goes on
            return
        try:
            os.write(self.fd, text.encode("utf-8", "replace"))
        except OSError:
            self.fd = None


def _resolve(mode, fd, in_worker) -> tuple[bool, float | None]:
    if mode == "off" or fd is None:
        return False, None
    if isinstance(mode, (int, float)):
        return False, float(mode)
    tty = _isatty(fd) and os.environ.get("TERM", "") != "dumb"
    if mode == "live":
        return not in_worker, None if not in_worker else DEFAULT_INTERVAL
    return (tty and not in_worker), (None if tty and not in_worker else DEFAULT_INTERVAL)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class _Watch:
    """A thread that renders one phase's line until :meth:`close`."""

    def __init__(self, progress: Progress, render, phase: str) -> None:
        self.p, self.render, self.phase = progress, render, phase
        self.started = time.monotonic()
        self.printed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{phase}", daemon=True)

    def start(self) -> _Watch:
        self._thread.start()
        return self

    def _run(self) -> None:
        every = _LIVE_EVERY if self.p.live else self.p.interval
        while not self._stop.wait(every):
            self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        text = self.render(self.started)
        line = f"{self.p.label}: {self.phase} {text}"
        if self.p.live:
            self.p.write(("\n" if not self.printed else "\r\x1b[K") + line + ("\n" if final else ""))
        else:
            self.p.write(line + "\n")
        self.printed = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.printed:  # a phase that showed progress also shows where it ended
            self._emit(final=True)


# -- what the lines say ---------------------------------------------------------------------------
def _fetch_line(stats, total: int | None, started: float) -> str:
    done = stats.bytes_total
    rate = done / max(time.monotonic() - started, 1e-6)
    parts = [f"{decimal_bytes(done)}" + (f" of {decimal_bytes(total)} ({min(done / total, 1):.0%})" if total else "")]
    parts.append(f"{decimal_bytes(rate)}/s")
    if total and rate > 0 and done < total:
        parts.append(f"ETA {short_duration((total - done) / rate)}")
    if getattr(stats, "bytes_cache", 0):
        parts.append(f"{decimal_bytes(stats.bytes_cache)} from the cache")
    return ", ".join(parts)


def _replay_line(spool, plan, segment_size: int | None, started: float, first: int) -> str:
    """``at 0/5A000000 in 0/3E000000..0/6B000000 (62%, segment 28 of 45), 40.1 MB/s, ETA 5s``"""
    n = len(plan.segments)
    at = min(max(spool.position, 0), n - 1)  # the highest planned segment replay asked for
    rate = (at - first) / max(time.monotonic() - started, 1e-6)  # segments a second
    share = f"{(at + 1) / n:.0%}, segment {at + 1} of {n}"
    if segment_size:
        lo, here = _lsn(plan.segments[0], segment_size), _lsn(plan.segments[at], segment_size)
        text = f"at {here} in {lo}..{_lsn(plan.segments[-1], segment_size, end=True)} ({share})"
    else:
        text = f"at {plan.segments[at]} ({share})"
    if segment_size and rate > 0:
        text += f", {decimal_bytes(rate * segment_size)}/s"
    if rate > 0 and at + 1 < n:
        text += f", ETA {short_duration((n - at - 1) / rate)}"
    return text


def _lsn(name: str, size: int, *, end: bool = False) -> str:
    from ..formats._wal import parse_segment_name
    from ..settings._target import format_lsn

    seg = parse_segment_name(name, size)
    return format_lsn((seg.segno + (1 if end else 0)) * size)
