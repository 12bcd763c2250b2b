"""How sizes and durations read in messages, reports and progress lines — one place for each.

* :func:`human_bytes` — binary units (``"512 B"``, ``"1.5 KiB"``), ``"-"`` for an unknown size;
* :func:`decimal_bytes` — decimal MB/GB for the progress lines (``"12.3 MB"``);
* :func:`option_duration` — a duration as an option is written (``"1h30m"``; ``parse_duration``
  reads it back), a fractional one as seconds (``"1.5s"``);
* :func:`human_duration` — an age in whole seconds, truncated (``"2d3h"``);
* :func:`short_duration` — an ETA, rounded, two units at most (``"1h02m"``, ``"3m05s"``).

Pure: no import from the rest of the package.
"""

from __future__ import annotations

import re

__all__ = ["decimal_bytes", "human_bytes", "human_duration", "option_duration", "short_duration"]

_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_DURATION_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def human_bytes(n: float | None, *, largest: str = "TiB") -> str:
    """``1536`` → ``"1.5 KiB"``; whole bytes below 1 KiB, one decimal above; ``None`` → ``"-"``.

    ``largest`` caps the unit (the evidence report counts in GiB at most: ``"2048.0 GiB"``).
    """
    if n is None:
        return "-"
    units = _BINARY_UNITS[: _BINARY_UNITS.index(largest) + 1]
    for unit in units:
        if abs(n) < 1024 or unit == largest:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable: the largest unit always returns")


def decimal_bytes(n: float | None) -> str:
    """``12_345_678`` → ``"12.3 MB"``, ``2.5e9`` → ``"2.50 GB"``; ``None`` → ``"?"``."""
    if n is None:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB"


def option_duration(seconds: float) -> str:
    """``5400`` → ``"1h30m"``, ``0`` → ``"0s"``, ``1.5`` → ``"1.5s"`` (the option syntax)."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in _DURATION_UNITS:
        count, rest = divmod(rest, size)
        parts.extend([f"{count}{unit}"] if count else [])
    return "".join(parts) or "0s"


def human_duration(seconds: float) -> str:
    """An age: whole seconds (truncated), largest units first, zero units left out (``"1d1m"``)."""
    seconds = int(seconds)
    for unit, size in _DURATION_UNITS[:-1]:
        if seconds >= size:
            rest = seconds % size
            return f"{seconds // size}{unit}{human_duration(rest) if rest else ''}"
    return f"{seconds}s"


def short_duration(seconds: float) -> str:
    """An ETA: rounded to the second, then ``"1h02m"``, ``"3m05s"`` or ``"42s"``."""
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@:]*):[^\s@]*@")  # a secret key may hold "/"


def redact_userinfo(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://user:<redacted>@host``, anywhere in ``text``."""
    return _USERINFO.sub(r"\1\2:<redacted>@", text)
