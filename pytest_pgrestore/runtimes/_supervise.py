"""The local runtime's supervisor: it starts the postmaster and ends everything the copy started.

Run by the harness as a script (``python -I -S _supervise.py …``): standard library only, no
import of this package, nothing read from a file the server user can write.  It runs as the
harness's user — root in CI — so the server user can neither kill nor mislead it; only the
postmaster drops to the server user.

Containment, strongest first (the mode is written to ``<run dir>/containment``):

``pid-namespace``
    As root: ``unshare(CLONE_NEWPID)``, then fork.  The child is process 1 of a new PID
    namespace and starts the postmaster inside it.  Everything the server or its children start,
    ``setsid`` or double-fork included, lives in that namespace; when its process 1 exits the
    kernel kills every process left in it.  The outer process forwards the harness's signals and
    takes its child down with it (``PR_SET_PDEATHSIG``).
``user-pid-namespace``
    Not root: the same inside a new user namespace that maps only our own uid and gid.
``subreaper``
    Where namespaces are refused (seccomp, ``user.max_user_namespaces = 0``): the supervisor is a
    child subreaper, so orphans of the server are re-parented to it rather than to init, and at
    the end it kills its whole tree of descendants until none is left.

The supervisor watches the harness (pid and start time, from ``/proc``).  When the harness is
gone and the run is not kept (a ``keep`` file in the run dir, owned by the harness's user), it
stops the postmaster (fast, immediate, kill), ends every other process, removes the run dir and
the socket dir, and exits.  Signals from the harness: SIGINT fast shutdown, SIGQUIT immediate,
SIGUSR1 SIGKILL of the postmaster; SIGTERM is taken as SIGINT.  Whatever ended the postmaster,
the supervisor ends every process left before it exits, with the postmaster's exit status.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import signal
import sys
import time

CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL = 0.2
_FORWARD = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGINT, signal.SIGQUIT: signal.SIGQUIT,
            signal.SIGUSR1: signal.SIGKILL}

_libc = ctypes.CDLL(None, use_errno=True)


def _say(text: str) -> None:
    sys.stderr.write(f"pgrestore supervisor: {text}\n")
    sys.stderr.flush()


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _unshare(flags: int) -> bool:
    return _libc.unshare(ctypes.c_int(flags)) == 0


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def process_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Options:
    def __init__(self, argv: list[str]) -> None:
        self.harness = 0
        self.harness_start = ""
        self.run = ""
        self.sockdir = ""
        self.uid: int | None = None
        self.gid: int | None = None
        self.allow_ns = True
        it = iter(argv)
        for arg in it:
            if arg == "--":
                break
            if arg == "--no-namespace":
                self.allow_ns = False
                continue
            value = next(it)
            if arg == "--harness":
                self.harness = int(value)
            elif arg == "--harness-start":
                self.harness_start = value
            elif arg == "--run":
                self.run = value
            elif arg == "--sockdir":
                self.sockdir = value
            elif arg == "--uid":
                self.uid = int(value)
            elif arg == "--gid":
                self.gid = int(value)
            else:
                raise SystemExit(f"pgrestore supervisor: unknown argument {arg!r}")
        self.command = list(it)
        if not (self.harness and self.run and self.command):
            raise SystemExit("pgrestore supervisor: needs --harness, --run and a command after --")


def contain(opts: Options) -> str:
    """Enter the strongest containment this machine allows; returns its name.  In a namespace
    mode the caller returns from here as the namespace's process 1: the outer process never
    returns (it forwards signals and exits with its child's status)."""
    if opts.allow_ns:
        if os.geteuid() == 0:
            mode = "pid-namespace" if _unshare(CLONE_NEWPID) else ""
        else:
            uid, gid = os.geteuid(), os.getegid()
            mode = ""
            if _unshare(CLONE_NEWUSER | CLONE_NEWPID):
                try:
                    _write("/proc/self/setgroups", "deny")
                    _write("/proc/self/uid_map", f"{uid} {uid} 1")
                    _write("/proc/self/gid_map", f"{gid} {gid} 1")
                    mode = "user-pid-namespace"
                except OSError as exc:  # the user namespace exists, but no mapping: give up on it
                    _say(f"no uid map in the user namespace ({exc}); trying without one")
                    raise SystemExit(125) from None
        if mode:
            _outer_forward(mode)  # returns only in the child: process 1 of the new namespace
            return mode
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    return "subreaper"


def _outer_forward(mode: str) -> None:
    outer = os.getpid()
    child = os.fork()
    if child == 0:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if not os.path.exists(f"/proc/{outer}"):  # the outer process died before prctl took
            os._exit(1)
        return
    for sig in (*_FORWARD, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: _kill(child, s))
    try:
        _pid, status = os.waitpid(child, 0)
    except ChildProcessError:
        os._exit(1)
    os._exit(_exit_code(status))


def _exit_code(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def host_pid() -> int:
    """This process's pid as ``/proc`` counts it: in a PID namespace ``os.getpid()`` is 1, but
    ``/proc`` is still the host's (no mount namespace), and so are the pids it lists."""
    return int(os.readlink("/proc/self"))


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Supervisor:
    def __init__(self, opts: Options, mode: str) -> None:
        self.opts, self.mode = opts, mode
        self.postmaster = 0
        self.status: int | None = None
        self.remove = False

    def start(self) -> None:
        argv = self.opts.command
        pid = os.fork()
        if pid == 0:
            try:
                os.setpgid(0, 0)
                if self.opts.uid is not None and os.geteuid() == 0:
                    os.setgroups([])
                    os.setgid(self.opts.gid if self.opts.gid is not None else self.opts.uid)
                    os.setuid(self.opts.uid)
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                for sig in (*_FORWARD, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                os.execv(argv[0], argv)
            except BaseException as exc:  # noqa: BLE001 - the child must never return into our loop
                _say(f"cannot start {argv[0]}: {exc}")
            os._exit(127)
        self.postmaster = pid
        for sig in _FORWARD:
            signal.signal(sig, self._forward)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # any signal (SIGCHLD above all) wakes the loop at once: a stop is not held up by the poll
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)

    def _forward(self, sig: int, _frame) -> None:
        if self.postmaster and self.status is None:
            _kill(self.postmaster, _FORWARD[signal.Signals(sig)])

    def harness_alive(self) -> bool:
        start = process_start(self.opts.harness)
        return start is not None and (not self.opts.harness_start or start == self.opts.harness_start)

    def kept(self) -> bool:
        try:
            st = os.lstat(os.path.join(self.opts.run, "keep"))
        except OSError:
            return False
        return st.st_uid == os.geteuid()  # a keep planted by the server user is not ours

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.postmaster:
                self.status = status

    def nap(self, seconds: float) -> None:
        """Sleep until a signal arrives or ``seconds`` pass."""
        select.select([self._wake_r], [], [], seconds)
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def wait_postmaster(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.status is None and time.monotonic() < deadline:
            self.reap()
            if self.status is None:
                self.nap(min(0.05, max(0.0, deadline - time.monotonic())))
        return self.status is not None

    def run(self) -> int:
        self.start()
        while self.status is None:
            self.reap()
            if self.status is not None:
                break
            if not self.remove and not self.harness_alive() and not self.kept():
                _say(f"the harness (pid {self.opts.harness}) is gone: stopping the server")
                self.remove = True
                for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                    _kill(self.postmaster, sig)
                    if self.wait_postmaster(wait):
                        break
                continue
            self.nap(POLL)
        self.end_all()
        if self.remove:
            self.remove_run()
        assert self.status is not None
        return _exit_code(self.status)

    def end_all(self) -> None:
        """Kill every process left: in a namespace ``kill(-1)`` reaches all of them; as a
        subreaper, the tree of descendants, again until none is left."""
        for _round in range(200):
            if self.mode != "subreaper":
                _kill(-1, signal.SIGKILL)
            else:
                for pid in _descendants(host_pid()):
                    _kill(pid, signal.SIGKILL)
            self.reap()
            if not _descendants(host_pid()):
                return
            time.sleep(0.01)
            self.reap()
            if not _descendants(host_pid()):
                return
        _say("processes still alive after 200 rounds of SIGKILL")

    def remove_run(self) -> None:
        for path in (self.opts.sockdir, self.opts.run):
            if path:
                shutil.rmtree(path, ignore_errors=True)


def children(pid: int) -> list[int]:
    """The children of ``pid``, from ``/proc/<pid>/task/<tid>/children`` (none once it is gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
    return kids


def _descendants(root: int) -> list[int]:
    """Every descendant of ``root``, parents first."""
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def main(argv: list[str]) -> int:
    opts = Options(argv)
    mode = contain(opts)
    _say(f"containment: {mode}")
    try:
        fd = os.open(os.path.join(opts.run, "containment"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        os.write(fd, (mode + "\n").encode())
        os.close(fd)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            _say(f"cannot record the containment mode: {exc}")
    return Supervisor(opts, mode).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
