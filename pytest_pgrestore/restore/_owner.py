"""Which process owns the run dirs and servers this process creates (the "harness").

Normally this process.  A restore shared by every pytest-xdist worker is owned by the xdist
controller instead: its run dir's record and its supervisor watch the controller, which
outlives every worker and tears the shared servers down at session finish.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["harness_pid", "owned_by"]

_owner: int | None = None


def harness_pid() -> int:
    return _owner or os.getpid()


@contextmanager
def owned_by(pid: int | None) -> Iterator[None]:
    """Run dirs and servers created in the block belong to ``pid`` (None: this process)."""
    global _owner
    previous, _owner = _owner, pid
    try:
        yield
    finally:
        _owner = previous
