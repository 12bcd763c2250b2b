"""The WAL spool and the restore_command wrapper, with its exit-code contract.

The harness (which alone holds credentials) fetches the planned segments in parallel into a
spool directory ahead of replay.  ``restore_command`` is a POSIX-sh wrapper that only moves
files out of the spool; it never talks to the store.  The contract with PostgreSQL:

* exit 0   — the file was moved to ``%p``;
* exit 1   — "absent": only for a name outside the plan that the harness confirmed missing;
             a planned segment is waited for and never answered absent;
* exit 200+— anything else (harness gone, fetch failed, spool unusable): PostgreSQL treats a
             status above 125 as fatal and aborts recovery instead of ending it early.

The wrapper and the harness talk through files: ``req/<name>`` (wrapper asks),
``<name>`` (ready), ``<name>.absent`` (confirmed missing), ``<name>.error`` (fetch failed).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["WalSpool", "SpoolStats", "Withheld", "write_wrapper", "EXIT_CODES"]

EXIT_CODES = {
    200: "the requested file name is not a WAL file name",
    201: "the spool directory is not writable",
    202: "moving the file into pg_wal failed",
    203: "the harness failed to fetch a file replay needs",
    204: "the harness process is gone",
    205: "waited too long for the harness",
}

_WRAPPER = """#!/bin/sh
# restore_command wrapper written by pytest-pgrestore: moves WAL out of the spool the harness
# fills; never reads the backup store.  Exit 1 only for a name the harness confirmed absent;
# every failure exits >= 200 so PostgreSQL aborts recovery instead of ending it early.
f="$1"; p="$2"; s={spool}; pid={pid}; limit={limit}
case "$f" in ""|.*|*[!0-9A-Za-z._-]*) exit 200;; esac
waited=0
while :; do
  if [ -f "$s/$f" ]; then mv -f "$s/$f" "$p" || exit 202; exit 0; fi
  [ -f "$s/$f.absent" ] && exit 1
  [ -f "$s/$f.error" ] && exit 203
  [ -d "/proc/$pid" ] || exit 204
  # "command": a failed redirection on the special built-in ":" would exit the shell with 1 or 2
  [ -f "$s/req/$f" ] || command : > "$s/req/$f" || exit 201
  waited=$((waited + 1))
  [ "$waited" -gt "$limit" ] && exit 205
  sleep 0.02
done
"""


#: Inside a container the harness's pid is not visible: liveness is a heartbeat file the harness
#: rewrites (a counter, at least every few seconds).  Unchanged for ``stale`` polls means gone.
_HARNESS_ALIVE_PID = '  [ -d "/proc/$pid" ] || exit 204\n'
_HARNESS_ALIVE_HEARTBEAT = """\
  now=; [ -r "$hb" ] && read -r now < "$hb"
  if [ "$now" != "$beat" ]; then beat=$now; still=0; else still=$((still + 1)); fi
  [ "$still" -gt "$stale" ] && exit 204
"""


def write_wrapper(path: Path, spool: Path, harness_pid: int | None, *, max_wait_s: float,
                  heartbeat: Path | None = None, stale_s: float = 20.0) -> Path:
    """Write the wrapper script; ``max_wait_s`` bounds one wait (the restore timeout).

    With ``heartbeat`` (a container, where ``/proc/<harness pid>`` cannot be seen) the harness
    counts as gone once that file has not changed for ``stale_s`` seconds of waiting.
    """
    limit = max(1, int(max_wait_s / 0.02))
    text = _WRAPPER.format(spool=shlex.quote(str(spool)), pid=harness_pid or 0, limit=limit)
    if heartbeat is not None:
        assert _HARNESS_ALIVE_PID in text and "waited=0\n" in text, "the wrapper's liveness check moved"
        stale = max(1, int(stale_s / 0.02))
        text = text.replace(_HARNESS_ALIVE_PID, _HARNESS_ALIVE_HEARTBEAT).replace(
            "waited=0\n", f"waited=0; hb={shlex.quote(str(heartbeat))}; stale={stale}; beat=; still=0\n")
    elif harness_pid is None:
        raise ValueError("write_wrapper needs the harness pid or a heartbeat file")
    path.write_text(text)
    path.chmod(0o755)
    return path


def _yield_cpu() -> None:
    """Prefetch runs ahead of replay on spare CPU: its threads get a lower priority (nice 10), so
    on a small runner they do not take a core from PostgreSQL's startup process or from the base
    backup's download.  What replay waits for right now (a re-fetch, a file outside the plan) is
    fetched by the request thread, at the normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux: the OS's own scheduling
        pass


class Withheld(Exception):
    """Raised by a ``before_deliver`` hook to hold one planned file back on purpose (the negative
    control): the spool answers "absent" for it, as for a name the store does not hold, instead
    of waiting for it forever."""


@dataclass
class SpoolStats:
    segments: int = 0
    bytes: int = 0
    busy_seconds: float = 0.0
    waited_seconds: float = 0.0  # replay asked for a file and waited until the spool had it
    on_demand: list[str] = field(default_factory=list)  # names fetched outside the plan
    absent: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    withheld: list[str] = field(default_factory=list)  # answered "absent" on purpose (Withheld)


#: how far prefetch may run ahead of replay: this many segments, and at most this many bytes
WINDOW_SEGMENTS = 64
WINDOW_BYTES = 2 << 30
#: segments fetched while the base backup downloads: replay's first ones, no more (on a runner with
#: few cores the whole window would slow the download more than it speeds replay)
HEAD_START_SEGMENTS = 8


class WalSpool:
    """Prefetch ``plan.segments`` into ``spool_dir`` and answer the wrapper's requests.

    At most ``window`` segments (and ``window_bytes``) are fetched ahead of the one replay last
    asked for, so the spool's disk use stays bounded whatever the segment size.
    """

    def __init__(self, fmt, plan, spool_dir: Path, *, owner: tuple[int, int] | None,
                 concurrency: int = 4, window: int = WINDOW_SEGMENTS, window_bytes: int = WINDOW_BYTES,
                 before_deliver: Callable[[str], None] | None = None) -> None:
        self.fmt, self.plan, self.dir = fmt, plan, spool_dir
        segment = getattr(getattr(plan, "backup", None), "segment_size", None) or 16 << 20
        self.owner, self.concurrency = owner, concurrency
        self.window = max(1, min(window, window_bytes // segment))
        self.ahead = self.window  # how far prefetch may run now: the window, or a head start's share
        self.before_deliver = before_deliver  # test hook: a late or failing delivery
        self.stats = SpoolStats()
        self._planned = {name: i for i, name in enumerate(plan.segments)}
        self._cursor = 0  # highest planned index replay has asked for
        self._next = 0  # next planned index to prefetch
        self._delivered: set[str] = set()
        self._asked: dict[str, float] = {}  # name → when replay asked for it before it was there
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        (self.dir / "req").mkdir(parents=True, exist_ok=True)
        for d in (self.dir, self.dir / "req"):
            d.chmod(0o700)
            if owner:
                os.chown(d, *owner)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, head_start: int | None = None) -> WalSpool:
        """Start prefetching.  With ``head_start``, only that many segments until :meth:`widen`:
        started while the base backup is still downloading, the spool readies replay's first
        segments without taking the CPU and the link from the download for the whole window."""
        if head_start is not None:
            self.ahead = max(1, min(head_start, self.window))
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="wal-fetch")
        for i in range(self.concurrency):
            t = threading.Thread(target=self._prefetch_loop, name=f"wal-prefetch-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._request_loop, name="wal-requests", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def widen(self) -> None:
        """From now on prefetch may run the whole window ahead of replay."""
        with self._lock:
            self.ahead = self.window
            self._lock.notify_all()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for t in self._threads:
            t.join(timeout=10)
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def fetch_all(self, extra: dict[str, str], *, timeout: float) -> None:
        """Fetch every planned segment and the ``extra`` files (name → key) before replay starts:
        a copy into a container must carry everything up front.  A failed fetch leaves its
        ``.error`` marker for the wrapper, as during replay."""
        with self._lock:
            self.window = self.ahead = max(self.window, len(self.plan.segments))
            self._lock.notify_all()
        for name, key in extra.items():
            if not (self.dir / name).exists():
                self._deliver(name, key)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                done = all(n in self._delivered or n in self.stats.errors or n in self.stats.withheld
                           for n in self.plan.segments)
            if done or self._stop.is_set():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"fetching {len(self.plan.segments)} planned WAL files took over {timeout:.0f}s")
            time.sleep(0.05)

    @property
    def position(self) -> int:
        """Index in ``plan.segments`` of the highest planned segment replay has asked for."""
        return self._cursor

    def __enter__(self) -> WalSpool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- prefetch --------------------------------------------------------------------------
    def _prefetch_loop(self) -> None:
        _yield_cpu()
        while not self._stop.is_set():
            with self._lock:
                while not self._stop.is_set() and (
                    self._next >= len(self.plan.segments) or self._next > self._cursor + self.ahead
                ):
                    self._lock.wait(0.2)
                if self._stop.is_set():
                    return
                name = self.plan.segments[self._next]
                self._next += 1
            self._deliver(name, self.plan.segment_keys[name])

    def _deliver(self, name: str, key: str) -> None:
        started = time.monotonic()
        tmp = self.dir / f".tmp.{name}.{threading.get_ident()}"
        try:
            if self.before_deliver:
                self.before_deliver(name)
            size = 0
            with self.fmt.open_wal(key) as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                if self.owner:
                    os.fchown(out.fileno(), *self.owner)
            os.rename(tmp, self.dir / name)
        except Withheld as why:
            log.warning("withholding %s on purpose: %s", name, why)
            if name not in self.stats.withheld:
                self.stats.withheld.append(name)
            self._mark(name, "absent")
            return
        except Exception as exc:  # any failure must reach the wrapper as a hard error
            log.error("fetching %s (%s) failed: %s", name, key, exc)
            tmp.unlink(missing_ok=True)
            self.stats.errors[name] = f"{key}: {exc}"
            self._mark(name, "error", f"{key}: {exc}\n")
            return
        with self._lock:
            self.stats.segments += 1
            self.stats.bytes += size
            self.stats.busy_seconds += time.monotonic() - started
            self._delivered.add(name)
            asked = self._asked.pop(name, None)
            if asked is not None:
                self.stats.waited_seconds += time.monotonic() - asked

    def _mark(self, name: str, kind: str, text: str = "") -> None:
        path = self.dir / f"{name}.{kind}"
        path.write_text(text)
        if self.owner:
            os.chown(path, *self.owner)

    # -- requests from the wrapper ---------------------------------------------------------
    def _request_loop(self) -> None:
        req = self.dir / "req"
        while not self._stop.is_set():
            try:
                names = os.listdir(req)
            except FileNotFoundError:
                return
            for name in names:
                self._answer(name)
                (req / name).unlink(missing_ok=True)
            self._follow_replay()
            self._stop.wait(0.01)

    def _follow_replay(self) -> None:
        """Replay takes a file it finds ready without asking: a delivered segment gone from the
        spool was moved into pg_wal, so the window slides on without waiting for a request."""
        with self._lock:
            moved = False
            while self._cursor + 1 < self._next:
                name = self.plan.segments[self._cursor + 1]
                if name not in self._delivered or (self.dir / name).exists():
                    break
                self._cursor += 1
                moved = True
            if moved:
                self._lock.notify_all()

    def _answer(self, name: str) -> None:
        if (self.dir / name).exists():
            return
        with self._lock:
            self._asked.setdefault(name, time.monotonic())
        idx = self._planned.get(name)
        if idx is not None:
            with self._lock:
                if idx > self._cursor:
                    self._cursor = idx
                    self._lock.notify_all()
                refetch = name in self._delivered and idx < self._next
                if refetch:
                    self._delivered.discard(name)
            if refetch:  # replay asked again for a segment it already consumed
                self._started_pool().submit(self._deliver, name, self.plan.segment_keys[name])
            return
        if name in self.stats.on_demand or (self.dir / f"{name}.absent").exists():
            return
        self.stats.on_demand.append(name)
        self._started_pool().submit(self._on_demand, name)

    def _started_pool(self) -> ThreadPoolExecutor:
        assert self._pool is not None  # start() makes it before the request loop that answers replay
        return self._pool

    def _on_demand(self, name: str) -> None:
        """A name outside the plan (history files, probes past the end): ask the store now."""
        try:
            key = self.fmt.find_wal(name)
        except Exception as exc:
            self.stats.errors[name] = str(exc)
            self._mark(name, "error", f"{exc}\n")
            return
        if key is None:
            self.stats.absent.append(name)
            self._mark(name, "absent")
            return
        self._deliver(name, key)
        with self._lock:
            self._delivered.discard(name)
            self.stats.on_demand.remove(name)  # a later request for it is a fresh one
