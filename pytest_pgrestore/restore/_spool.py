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

The spool belongs to the server user, and the server runs code from the backup as that user, so
the harness (often root) trusts nothing in it: it opens the spool and ``req/`` once, before the
server starts, and does everything after relative to those directory descriptors — files made
with ``O_EXCL | O_NOFOLLOW`` under unpredictable temp names and renamed into place, markers
likewise, ownership given by ``fchown``, names read from ``req/`` checked against the pattern the
wrapper allows.  A symlink planted anywhere, or the spool or ``req/`` swapped for one, is never
followed: root never writes, chowns, lists or deletes outside the directories it made.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
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
    # the run dir belongs to the server user: a fresh file renamed over whatever is at ``path``
    parent = os.open(path.parent, _DIR_FLAGS)
    try:
        tmp, fd = _create_temp(parent, path.name, 0o755)
        try:
            with open(fd, "w", encoding="utf-8") as out:
                os.fchmod(out.fileno(), 0o755)  # whatever the umask
                out.write(text)
            os.rename(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            _discard(parent, tmp)
            raise
    finally:
        os.close(parent)
    return path


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: the names the wrapper asks for (its ``case`` pattern), bounded so a temp name fits NAME_MAX
_WAL_NAME = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}")


def _is_wal_name(name: str) -> bool:
    return _WAL_NAME.fullmatch(name) is not None


def _temp_token() -> str:
    return secrets.token_hex(16)


def _create_temp(dir_fd: int, base: str, mode: int = 0o600) -> tuple[str, int]:
    """A new file ``.tmp.<base>.<random>`` in ``dir_fd``, made by this call (``O_EXCL``, never
    through a symlink): (its name, a descriptor open for writing).  A name that is taken —
    planted by someone who guessed it — is left alone and another one tried."""
    for _ in range(3):
        tmp = f".tmp.{base}.{_temp_token()}"
        try:
            return tmp, os.open(tmp, _NEW_FILE_FLAGS, mode, dir_fd=dir_fd)
        except FileExistsError:
            log.warning("%s already existed (the harness did not make it): left alone", tmp)
    raise FileExistsError(f"no free temp name for {base}")


def _discard(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _yield_cpu() -> None:
    """Prefetch runs ahead of replay on spare CPU: its threads get a lower priority (nice 10), so
    on a small runner they do not take a core from PostgreSQL's startup process or from the base
    backup's download.  What replay waits for right now (a re-fetch, a file outside the plan) is
    fetched by the request thread, at the normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux: the OS's own scheduling
        pass


def _oversized(name: str, cap: int):
    """The error of a WAL object decoding past ``cap`` (the wrapper's marker puts its key first)."""
    from .._fmt import human_bytes
    from ..errors import CorruptBackup

    return CorruptBackup(f"WAL file {name} decodes to more than the WAL segment size "
                         f"({human_bytes(cap)}, {cap} bytes)",
                         checked="the decoded bytes of every WAL object delivered to the spool "
                                 "(a segment is exactly the segment size, other WAL files smaller)",
                         fix="the object is corrupt or not a WAL segment of this cluster; restore from another "
                             "backup or repair the archive")


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
        self.segment_size = segment  # no WAL file decodes to more (a segment, a .partial, a history file)
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
        self._stuck: set[str] = set()  # entries in req/ that would not go: not answered again
        self._reported: set[str] = set()  # what the spool already complained about (once each)
        # opened once, before the server starts; every later operation is relative to these
        self.dir.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self.dir, _DIR_FLAGS)
        try:
            try:
                os.mkdir("req", 0o700, dir_fd=self._dir_fd)
            except FileExistsError:
                pass
            self._req_fd = os.open("req", _DIR_FLAGS, dir_fd=self._dir_fd)
        except BaseException:
            os.close(self._dir_fd)
            raise
        for fd in (self._dir_fd, self._req_fd):
            os.fchmod(fd, 0o700)
            if owner:
                os.fchown(fd, *owner)
        self._identity = {"spool directory": _identity(os.fstat(self._dir_fd)),
                          "spool's req directory": _identity(os.fstat(self._req_fd))}

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
        if any(t.is_alive() for t in self._threads):  # a descriptor number reused under it: worse than a leak
            log.warning("a WAL spool thread is still running: its directory descriptors stay open")
            return
        fds, self._dir_fd, self._req_fd = (self._dir_fd, self._req_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def fetch_all(self, extra: dict[str, str], *, timeout: float) -> None:
        """Fetch every planned segment and the ``extra`` files (name → key) before replay starts:
        a copy into a container must carry everything up front.  A failed fetch leaves its
        ``.error`` marker for the wrapper, as during replay."""
        with self._lock:
            self.window = self.ahead = max(self.window, len(self.plan.segments))
            self._lock.notify_all()
        for name, key in extra.items():
            if not self._present(name):
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
        tmp = None
        try:
            if not _is_wal_name(name):
                raise ValueError(f"{name!r} is not a WAL file name")
            if self.before_deliver:
                self.before_deliver(name)
            size, cap = 0, self.segment_size
            with self.fmt.open_wal(key) as src:
                tmp, fd = _create_temp(self._dir_fd, name)
                with open(fd, "wb") as out:
                    while chunk := src.read(1 << 20):
                        size += len(chunk)
                        if size > cap:  # a decompression bomb, or not a WAL file: never past one segment
                            raise _oversized(name, cap)
                        out.write(chunk)
                    if self.owner:
                        os.fchown(out.fileno(), *self.owner)
            os.rename(tmp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except Withheld as why:
            log.warning("withholding %s on purpose: %s", name, why)
            if name not in self.stats.withheld:
                self.stats.withheld.append(name)
            self._mark(name, "absent")
            return
        except Exception as exc:  # any failure must reach the wrapper as a hard error
            log.error("fetching %s (%s) failed: %s", name, key, exc)
            if tmp is not None:
                _discard(self._dir_fd, tmp)
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
        """Leave ``<name>.<kind>`` for the wrapper: a new file renamed over whatever is there (a
        symlink the server planted is replaced, not followed).  A failure is logged: the wrapper,
        unanswered, fails on its own time limit."""
        marker = f"{name}.{kind}"
        tmp = None
        try:
            if not _is_wal_name(name):
                raise ValueError(f"{name!r} is not a WAL file name")
            tmp, fd = _create_temp(self._dir_fd, marker)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(text)
                if self.owner:
                    os.fchown(out.fileno(), *self.owner)
            os.rename(tmp, marker, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        except (OSError, ValueError) as exc:
            log.error("could not leave the marker %s in the WAL spool: %s", marker, exc)
            if tmp is not None:
                _discard(self._dir_fd, tmp)

    def _present(self, name: str) -> bool:
        """Whether the spool holds ``name`` (whatever it is: nothing is followed)."""
        try:
            os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _report_once(self, key: str, message: str, *args) -> None:
        """Log an error once per ``key``; what names a file is bounded (the server makes the names)."""
        if key in self._reported or (len(self._reported) >= 100 and not key.startswith("swap:")):
            return
        self._reported.add(key)
        log.error(message, *args)

    # -- requests from the wrapper ---------------------------------------------------------
    def _request_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._check_swapped()
                self._take_requests()
                self._follow_replay()
            except Exception as exc:  # the thread that answers replay must outlive whatever it finds
                self._report_once(f"loop:{exc}", "answering restore_command's requests: %s", exc)
            self._stop.wait(0.01)

    def _take_requests(self) -> None:
        for name in os.listdir(self._req_fd):
            if name in self._stuck:
                continue
            if _is_wal_name(name):
                self._answer(name)
            else:
                self._report_once(f"name:{name}", "ignored a request for %r in the WAL spool: not a WAL "
                                  "file name (the wrapper never asks for one)", name)
            try:
                os.unlink(name, dir_fd=self._req_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a directory, say: the wrapper never makes one
                self._stuck.add(name)
                self._report_once(f"stuck:{name}", "cannot remove the request req/%s from the WAL spool (%s): "
                                  "no longer answered", name, exc)

    def _check_swapped(self) -> None:
        """The server user may rename the spool or ``req/`` away and put a symlink in its place.
        The harness goes on in the directories it made (it never follows the swap); say so once,
        since the wrapper, going by path, is now talking to something else."""
        now: dict[str, tuple[int, int] | None] = {}
        try:
            now["spool directory"] = _identity(os.stat(self.dir, follow_symlinks=False))
        except OSError:
            now["spool directory"] = None
        try:
            now["spool's req directory"] = _identity(os.stat("req", dir_fd=self._dir_fd, follow_symlinks=False))
        except OSError:
            now["spool's req directory"] = None
        for what, ident in now.items():
            if ident != self._identity[what]:
                where = self.dir if what == "spool directory" else self.dir / "req"
                self._report_once(f"swap:{what}", "the %s %s was replaced or removed (not by the harness: by "
                                  "the server user?); the harness keeps to the directory it made and "
                                  "follows nothing put there, so restore_command will fail", what, where)

    def _follow_replay(self) -> None:
        """Replay takes a file it finds ready without asking: a delivered segment gone from the
        spool was moved into pg_wal, so the window slides on without waiting for a request."""
        with self._lock:
            moved = False
            while self._cursor + 1 < self._next:
                name = self.plan.segments[self._cursor + 1]
                if name not in self._delivered or self._present(name):
                    break
                self._cursor += 1
                moved = True
            if moved:
                self._lock.notify_all()

    def _answer(self, name: str) -> None:
        if self._present(name):
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
        if name in self.stats.on_demand or self._present(f"{name}.absent"):
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
