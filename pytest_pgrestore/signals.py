"""SIGTERM ends a drill run the way Ctrl-C does: teardown stops every server, removes every run dir.

pytest handles SIGINT (KeyboardInterrupt) but not SIGTERM, which CI runners and ``timeout``
send first: by default the process dies at once, leaving cleanup to the supervisors.  While a
session runs, SIGTERM raises :class:`KeyboardInterrupt` in the main thread instead, once; the
previous handler is back for a second SIGTERM and after the session.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["SigtermInterrupt", "deferred_interrupts", "interrupt_on_sigterm"]


class SigtermInterrupt(KeyboardInterrupt):
    """A SIGTERM, turned into an interrupt so that teardown runs."""


def interrupt_on_sigterm() -> Callable[[], None] | None:
    """Install the handler; returns the function that puts the previous one back (None: not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        return None  # whoever started us wants SIGTERM ignored
    restore_to = signal.SIG_DFL if previous is None else previous

    def on_sigterm(signum, frame) -> None:
        signal.signal(signal.SIGTERM, restore_to)  # a second SIGTERM acts as it would without us
        log.warning("SIGTERM: interrupting the session so that restored servers are stopped and removed")
        raise SigtermInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)

    def uninstall() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, restore_to)

    return uninstall


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; deliver them, once each, when it ends.

    For the few steps that must not be cut half-way: creating a run dir and recording who
    removes it, starting a worker thread and recording who joins it.  Python runs a signal's
    handler between any two bytecodes of the main thread, so without this a Ctrl-C can land
    after a thing exists and before anything knows to clean it up.  Off the main thread (where
    handlers cannot be set) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum, frame) -> None:
        caught.append(signum)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int] = {}  # keyed as the handler gets it
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None):  # ignored stays ignored; None: not set from Python
            previous[sig] = handler
            signal.signal(sig, hold)
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        for signum in dict.fromkeys(caught):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)  # default_int_handler raises KeyboardInterrupt, ours SigtermInterrupt
            else:  # SIG_DFL: what the signal would have done
                os.kill(os.getpid(), signum)
