"""SIGTERM becomes an interrupt once; the previous handler comes back (in a child interpreter)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, signal
from pytest_pgrestore.signals import SigtermInterrupt, interrupt_on_sigterm

def mine(signum, frame):
    print("previous handler ran")

signal.signal(signal.SIGTERM, mine)
uninstall = interrupt_on_sigterm()
try:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line
    print("not interrupted")
except SigtermInterrupt:
    print("interrupted")
assert signal.getsignal(signal.SIGTERM) is mine, "a second SIGTERM must reach the previous handler"
os.kill(os.getpid(), signal.SIGTERM)
uninstall()
assert signal.getsignal(signal.SIGTERM) is mine
again = interrupt_on_sigterm()
again()
assert signal.getsignal(signal.SIGTERM) is mine, "uninstall puts the previous handler back"
signal.signal(signal.SIGTERM, signal.SIG_IGN)
assert interrupt_on_sigterm() is None and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
print("done")
"""


def test_sigterm_interrupts_once_then_the_previous_handler_is_back():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["interrupted", "previous handler ran", "done"]


def test_sigterm_interrupt_is_a_keyboard_interrupt():
    from pytest_pgrestore.signals import SigtermInterrupt

    assert issubclass(SigtermInterrupt, KeyboardInterrupt)

DEFERRED = r"""
import os, signal
from pytest_pgrestore.signals import deferred_interrupts

steps = []
try:
    with deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)  # held: the block goes on to its end
        os.kill(os.getpid(), signal.SIGINT)  # twice is still one interrupt
        steps.append("block ended")
    steps.append("not interrupted")
except KeyboardInterrupt:
    steps.append("interrupted after the block")
assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
signal.signal(signal.SIGINT, signal.SIG_IGN)
with deferred_interrupts():
    os.kill(os.getpid(), signal.SIGINT)
steps.append("ignored stays ignored")
print(" | ".join(steps))
"""


def test_deferred_interrupts_deliver_once_after_the_block():
    out = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "block ended | interrupted after the block | ignored stays ignored"
