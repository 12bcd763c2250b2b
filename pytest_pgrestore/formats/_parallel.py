"""Run a backup's download jobs on a few threads, and never leave one running.

Every tar/file download of a materialize step goes through :func:`run_jobs`.  What it adds to a
thread pool: when it returns or raises — a damaged object, Ctrl-C, SIGTERM — every thread it
started has ended, so the caller can remove the run dir knowing nothing will write into it
again.  (``ThreadPoolExecutor`` records a worker only after starting it: a Ctrl-C in between
left a thread nobody joined, extracting into a directory already removed.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import BinaryIO, TypeVar

from .. import _faults
from ..signals import deferred_interrupts

__all__ = ["Counting", "run_jobs", "fetch_workers", "DEFAULT_FETCH_CONCURRENCY"]

#: the default of --restore-fetch-concurrency (settings/options.py)
DEFAULT_FETCH_CONCURRENCY = 8


def fetch_workers(fmt) -> int:
    """How many objects ``fmt`` fetches at once: the run's ``--restore-fetch-concurrency``
    (``fmt.concurrency``, set by ``get_format``)."""
    return getattr(fmt, "concurrency", None) or DEFAULT_FETCH_CONCURRENCY


Item = TypeVar("Item")
Result = TypeVar("Result")


def run_jobs(job: Callable[[Item], Result], items: Iterable[Item], *, workers: int, name: str,
             cancel: threading.Event | None = None) -> list[Result]:
    """``[job(item) for item in items]`` on up to ``workers`` threads, results in order.

    The first failure sets ``cancel`` (jobs that read through it stop at their next read; jobs
    not begun are skipped) and is raised once every thread has ended.
    """
    cancel = cancel if cancel is not None else threading.Event()
    todo: queue.SimpleQueue[tuple[int, Item]] = queue.SimpleQueue()
    count = 0
    for count, item in enumerate(items, start=1):
        todo.put((count - 1, item))
    results: list = [None] * count
    failures: list[BaseException] = []

    def work() -> None:
        while not cancel.is_set():
            try:
                index, item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[index] = job(item)
            except BaseException as exc:  # handed to the caller's thread
                failures.append(exc)
                cancel.set()
                return

    threads: list[threading.Thread] = []
    try:
        for n in range(min(workers, count)):
            thread = threading.Thread(target=work, name=f"{name}-{n}", daemon=True)
            with deferred_interrupts():  # recorded, then started: a thread that runs is one we join
                threads.append(thread)
                thread.start()
            _faults.point("jobs.started")
        for thread in threads:
            thread.join()
    except BaseException:
        cancel.set()
        raise
    finally:
        _join_all(threads, cancel)
    if failures:
        raise failures[0]
    return results


def _join_all(threads: list[threading.Thread], cancel: threading.Event) -> None:
    """Join every thread even through another Ctrl-C; that interrupt is raised afterwards."""
    interrupted: BaseException | None = None
    for thread in threads:
        while True:
            try:
                thread.join()
                break
            except BaseException as exc:  # a second Ctrl-C while the jobs wind down
                cancel.set()
                interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


class Counting:
    """Counts the bytes read from the store (what the network carried); once ``cancel`` is set,
    the next read raises, which ends that download."""

    def __init__(self, raw: BinaryIO, cancel: threading.Event | None = None) -> None:
        self.raw, self.count, self.cancel = raw, 0, cancel

    def read(self, n: int = -1) -> bytes:
        if self.cancel is not None and self.cancel.is_set():
            raise InterruptedError("restore cancelled")
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
