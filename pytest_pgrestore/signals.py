"""SIGTERM ends a drill run the way Ctrl-C does: teardown stops every server, removes every run dir.

pytest handles SIGINT (KeyboardInterrupt) but not SIGTERM, which CI runners and ``timeout``
send first: by default the process dies at once, leaving cleanup to the supervisors.  While a
session runs, SIGTERM raises :class:`KeyboardInterrupt` in the main thread instead, once; the
previous handler is back for a second SIGTERM and after the session.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

__all__ = ["SigtermInterrupt", "interrupt_on_sigterm"]


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
