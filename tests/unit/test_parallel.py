"""run_jobs: results in order, the first failure raised, and never a thread left running."""

from __future__ import annotations

import threading
import time

import pytest

from pytest_pgrestore import _faults
from pytest_pgrestore.formats._parallel import run_jobs


def _alive(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(name)]


def test_results_come_back_in_the_order_of_the_items():
    assert run_jobs(lambda n: n * n, range(10), workers=3, name="t-order") == [n * n for n in range(10)]
    assert run_jobs(lambda n: n, [], workers=3, name="t-empty") == []
    assert not _alive("t-order")


def test_the_first_failure_cancels_the_rest_and_is_raised_after_every_thread_ended():
    cancel = threading.Event()
    started = []

    def job(n):
        started.append(n)
        if n == 0:
            raise ValueError("damaged object 0")
        cancel.wait(5)  # a download that stops at its next read once cancelled
        time.sleep(0.2)
        return n

    with pytest.raises(ValueError, match="damaged object 0"):
        run_jobs(job, range(20), workers=3, name="t-fail", cancel=cancel)
    assert cancel.is_set()
    assert not _alive("t-fail"), "a thread outlived run_jobs"
    assert len(started) <= 3, "jobs not begun when the failure came must be skipped"


def test_an_interrupt_while_threads_start_joins_the_started_ones():
    release = threading.Event()

    def interrupt():
        _faults.disarm()
        release.set()
        raise KeyboardInterrupt

    _faults.arm("jobs.started", interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs(lambda n: (release.wait(5), time.sleep(0.3)), range(4), workers=4, name="t-interrupt")
    finally:
        _faults.disarm()
    assert not _alive("t-interrupt"), "a started thread was not joined"


def test_unknown_fault_points_are_refused():
    with pytest.raises(ValueError, match="unknown fault point"):
        _faults.arm("no.such.point", lambda: None)
