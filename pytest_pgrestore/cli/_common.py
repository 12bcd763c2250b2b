"""What every ``pgrestore`` command shares: exit codes and output helpers."""

from __future__ import annotations

import json

from ..settings._options import parse_duration

EXIT_OK, EXIT_FAILED, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 3, 4


def json_print(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def duration(text: str | None, flag: str) -> float | None:
    return parse_duration(text, origin=flag) if text is not None else None
