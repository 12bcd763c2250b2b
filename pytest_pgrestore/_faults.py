"""Named places where the test suite can make the harness fail on purpose.

A Ctrl-C can arrive between any two steps; the places where one used to leave something behind
are named here so that a test can deliver it exactly there, every time, instead of hoping a
timed signal lands in a window of microseconds.  Nothing is armed in normal use: a point costs
one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["POINTS", "arm", "disarm", "point"]

POINTS = (
    "rundir.created",  # RunDir.create: the run dir exists, nothing else yet
    "attempt.rundir",  # RestoreAttempt.run: RunDir.create has returned
    "jobs.started",  # run_jobs: one more worker thread has just started
)
_armed: dict[str, Callable[[], None]] = {}


def arm(name: str, action: Callable[[], None]) -> None:
    """Run ``action`` (typically: raise KeyboardInterrupt) each time ``name`` is reached."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    _armed[name] = action


def disarm(name: str | None = None) -> None:
    if name is None:
        _armed.clear()
    else:
        _armed.pop(name, None)


def point(name: str) -> None:
    action = _armed.get(name)
    if action is not None:
        action()
