"""One throwaway PostgreSQL container: created idle, handed the run dir, told to start postgres.

The container's main process is a POSIX-sh supervisor (under the daemon's tiny init) that waits
for ``<run>/go``, then runs ``postgres`` with a clean environment and forwards SIGINT/SIGTERM to
it.  PostgreSQL utilities run beside it with ``docker exec`` while it waits, so the runner needs
no PostgreSQL installed.  The harness touches ``<run>/heartbeat``; when that stops moving (the
harness was SIGKILLed) the supervisor stops postgres, and the next run's sweep removes the
container — unless ``<run>/keep`` says the run was kept on purpose.

The run dir reaches the container at the same absolute path, either by bind mount (the daemon
shares our filesystem) or copied into an anonymous volume (docker:dind and remote daemons).
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PgRestoreError

log = logging.getLogger(__name__)

__all__ = ["PgContainer", "ExecResult", "SUPERVISOR", "HEARTBEAT_TICK", "STALE_AFTER"]

HEARTBEAT_TICK = 0.25  # seconds between the supervisor's checks
STALE_AFTER = 30.0  # seconds without a heartbeat before the supervisor stops postgres

SUPERVISOR = r"""
run=$1 hb=$2 limit=$3
last=; stale=0
alive() {  # did the harness's heartbeat move lately (or was the run kept on purpose)?
  now=; [ -r "$hb" ] && read -r now < "$hb"
  if [ "$now" != "$last" ]; then last=$now; stale=0; return 0; fi
  stale=$((stale + 1))
  [ "$stale" -le "$limit" ] || [ -e "$run/keep" ]
}
while [ ! -e "$run/go" ]; do
  alive || { echo "pytest-pgrestore supervisor: harness heartbeat stopped before start" >&2; exit 0; }
  sleep 0.25
done
while :; do
  set --  # postgres's arguments, one per line, written by the harness with the go-ahead
  while IFS= read -r arg; do set -- "$@" "$arg"; done < "$run/postgres.args"
  env -i PATH="$PATH" LANG=C LC_ALL=C TZ=UTC "$@" &
  pg=$!
  trap 'kill -INT "$pg" 2>/dev/null' INT TERM
  while kill -0 "$pg" 2>/dev/null; do
    if ! alive; then
      echo "pytest-pgrestore supervisor: harness heartbeat stopped; stopping postgres" >&2
      kill -INT "$pg" 2>/dev/null
    fi
    sleep 0.25 & wait $!
  done
  wait "$pg"; rc=$?
  trap - INT TERM
  # <run>/offline: the harness stopped postgres to run a tool on the stopped cluster; start it again
  # once the file is gone
  [ -e "$run/offline" ] || exit "$rc"
  : > "$run/offline.down"
  while [ -e "$run/offline" ]; do
    alive || { echo "pytest-pgrestore supervisor: harness heartbeat stopped while offline" >&2; exit 0; }
    sleep 0.25
  done
  rm -f "$run/offline.down"
done
"""


@dataclass
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


class PgContainer:
    """A created (and later started) container serving ``run_dir``; owner is the image's uid/gid."""

    def __init__(self, client, container, *, run_dir: Path, owner: tuple[int, int], copy: bool) -> None:
        self.client, self.container = client, container
        self.run_dir, self.owner, self.copy = run_dir, owner, copy
        self.heartbeat_file = run_dir / "heartbeat"
        self._beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mirror = None  # copy mode: a SpoolMirror once postgres is about to start

    @property
    def name(self) -> str:
        return self.container.name

    @property
    def user(self) -> str:
        return f"{self.owner[0]}:{self.owner[1]}"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the idle supervisor and keep the heartbeat going."""
        self.beat()
        self.container.start()
        self._thread = threading.Thread(target=self._beat_loop, name=f"heartbeat-{self.name}", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._beats += 1
        if self.copy and self._thread is not None:
            return  # the beat loop writes it inside the container
        tmp = self.heartbeat_file.with_name(".heartbeat.tmp")
        tmp.write_text(f"{self._beats}\n")
        os.replace(tmp, self.heartbeat_file)

    def _beat_loop(self) -> None:
        period = HEARTBEAT_TICK if self.copy else 1.0
        busy_until = 0.0
        while not self._stop.wait(0.02 if time.monotonic() < busy_until else period):
            try:
                if not self.copy:
                    self.beat()
                    continue
                self._beats += 1
                names = self.exec(["sh", "-c", _BEAT_AND_LIST, "sh", str(self._beats), str(self.run_dir)])
                if self._mirror is None:
                    continue
                if names.returncode == 0 and names.stdout.split():
                    self._mirror.forward(names.stdout.split())
                if self._mirror.push_answers() or self._mirror.in_flight:
                    busy_until = time.monotonic() + 1.0  # replay asks in bursts: answer at once
            except Exception as exc:  # the container is going away; the watcher will notice
                if not self._stop.is_set():
                    log.debug("heartbeat for %s failed: %s", self.name, exc)

    def go(self, mirror=None) -> None:
        """Let the supervisor start postgres."""
        import docker.errors

        self._mirror = mirror
        try:
            out = self.exec(["sh", "-c", ': > "$1/go"', "sh", str(self.run_dir)])
            problem = out.stderr.strip() if out.returncode else None
        except docker.errors.APIError as exc:
            problem = exc.explanation or str(exc)
        if problem is not None:
            tail = "\n    ".join(self.logs().splitlines()[-20:]) or "(empty)"
            raise PgRestoreError(f"could not start postgres in container {self.name}: {problem}",
                                 checked=f"writing {self.run_dir}/go inside the container; its log:\n    {tail}",
                                 fix="see the container log above; a container the daemon stopped or removed "
                                     "cannot serve the restore")

    def keep(self) -> None:
        """The run is kept on purpose: the supervisor must not stop postgres when we exit."""
        if self.poll() is None:
            self.exec(["sh", "-c", ': > "$1/keep"', "sh", str(self.run_dir)])
        self._stop.set()

    def poll(self) -> int | None:
        import docker.errors

        try:
            self.container.reload()
        except docker.errors.NotFound:
            return 255  # removed under our feet
        state = self.container.attrs.get("State", {})
        if state.get("Status") in ("exited", "dead"):
            return int(state.get("ExitCode", 255))
        return None

    def logs(self) -> str:
        import docker.errors

        try:
            return self.container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        except docker.errors.APIError:
            return ""

    def shutdown(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        import docker.errors

        for sig, wait in (("SIGINT", timeout), ("SIGQUIT", 5.0), ("SIGKILL", 5.0)):
            if self.poll() is not None:
                return
            try:
                self.container.kill(signal=sig)
                self.container.wait(timeout=wait)
                return
            except docker.errors.NotFound:
                return
            except Exception as exc:  # requests' ReadTimeout on wait, or a race with the exit
                if self.poll() is not None:
                    return
                log.warning("container %s ignored %s (%s)", self.name, sig, exc)

    def remove(self) -> None:
        import docker.errors

        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        try:
            self.container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass

    # -- inside the container -----------------------------------------------------------------
    def exec(self, argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None) -> ExecResult:
        res = self.container.exec_run(argv, user=user or self.user, demux=True,
                                      environment={"LC_ALL": "C", "LANG": "C", **(env or {})})
        out, err = res.output if res.output else (b"", b"")
        return ExecResult(res.exit_code if res.exit_code is not None else 255,
                          (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace"))

    def put_atomic(self, paths: list[Path], dest: Path) -> None:
        """Copy files into ``dest`` so that each appears whole (put_archive writes in place)."""
        staging = dest / f".incoming-{os.getpid()}-{threading.get_ident()}"
        self.put(paths, dirs=[staging], rename={p: staging / p.name for p in paths})
        out = self.exec(["sh", "-c", 'cd "$1" && for f in *; do mv -f "$f" ..; done && cd .. && rm -rf "$1"',
                         "sh", str(staging)])
        if out.returncode != 0:
            raise OSError(f"moving files into {dest} in container {self.name} failed: {out.stderr.strip()}")

    def put(self, paths: Iterable[Path], *, dirs: Iterable[Path] = (), rename: dict | None = None) -> int:
        """Copy files (and empty directories) to the same absolute paths, owned by the server user."""
        reader, writer = os.pipe()
        counted = {"bytes": 0}
        error: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(writer, "wb") as out, tarfile.open(fileobj=out, mode="w|") as tar:
                    for d in dirs:
                        tar.addfile(self._tarinfo(d, tar))
                    for p in paths:
                        info = self._tarinfo(p, tar, (rename or {}).get(p, p))
                        if info.isreg():
                            with open(p, "rb") as fh:
                                tar.addfile(info, fh)
                            counted["bytes"] += info.size
                        else:
                            tar.addfile(info)
            except BaseException as exc:  # surfaces below, after the upload saw a short tar
                error.append(exc)

        t = threading.Thread(target=produce, name="tar-into-container", daemon=True)
        t.start()
        with os.fdopen(reader, "rb") as stream:
            self.container.put_archive("/", _Chunks(stream))
        t.join()
        if error:
            raise error[0]
        return counted["bytes"]

    def _tarinfo(self, path: Path, tar: tarfile.TarFile, dest: Path | None = None) -> tarfile.TarInfo:
        if not os.path.lexists(path):  # a directory made only inside the container
            info = tarfile.TarInfo(str(path).lstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        else:
            info = tar.gettarinfo(str(path), arcname=str(dest or path).lstrip("/"))
        info.uid, info.gid = self.owner
        info.uname = info.gname = ""
        return info

    def put_bytes(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(str(path).lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            info.uid, info.gid = self.owner
            tar.addfile(info, io.BytesIO(data))
        self.container.put_archive("/", buf.getvalue())


# In copy mode one exec per tick writes the heartbeat and takes the wrapper's requests.
_BEAT_AND_LIST = r"""
printf '%s\n' "$1" > "$2/.heartbeat.tmp" && mv -f "$2/.heartbeat.tmp" "$2/heartbeat"
cd "$2/spool/req" 2>/dev/null || exit 0
for f in *; do
  [ -e "$f" ] || continue
  rm -f "$f"
  echo "$f"
done
"""


class _Chunks:
    """A file-like requests streams with chunked encoding (no length known up front)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __iter__(self):
        while chunk := self.stream.read(1 << 20):
            yield chunk


class SpoolMirror:
    """Copy mode: carry the wrapper's requests to the harness's spool and the answers back.

    The wrapper inside the container writes ``req/<name>``; the beat loop lists (and removes)
    them and hands each name to :meth:`forward`, which asks the harness's :class:`WalSpool`
    exactly as a local wrapper would.  :meth:`push_answers` copies whatever the spool produced
    (a segment, ``<name>.absent`` or ``<name>.error``) into the container's spool.
    """

    def __init__(self, container: PgContainer, spool_dir: Path) -> None:
        self.container, self.dir = container, spool_dir
        self.in_flight: set[str] = set()
        self.pushed_markers: set[str] = set()
        self.lock = threading.Lock()

    def forward(self, names: list[str], *, wait: float = 2.0) -> None:
        """Ask the spool, and push its answers as soon as they exist (up to ``wait`` seconds)."""
        with self.lock:
            for name in names:
                if name in self.in_flight or not _safe_name(name):
                    continue
                if f"{name}.absent" in self.pushed_markers or f"{name}.error" in self.pushed_markers:
                    continue  # a request that crossed our answer: the container holds the marker
                self.in_flight.add(name)
                (self.dir / "req" / name).touch()
        deadline = time.monotonic() + wait
        while self.in_flight and time.monotonic() < deadline:
            if not self.push_answers():
                time.sleep(0.01)

    def push_answers(self) -> bool:
        """Push what the spool answered; True when something was pushed."""
        with self.lock:
            ready = []
            for entry in os.scandir(self.dir):
                name = entry.name
                if not entry.is_file() or name.startswith(".") or name in self.pushed_markers:
                    continue
                ready.append(name)
            if not ready:
                return False
            markers = [self.dir / n for n in ready if n.endswith((".absent", ".error"))]
            files = [self.dir / n for n in ready if not n.endswith((".absent", ".error"))]
            if markers:  # the wrapper only tests that a marker exists: no need to appear whole
                self.container.put(markers)
            if files:
                self.container.put_atomic(files, self.dir)
            for name in ready:
                base = name.rsplit(".", 1)[0] if name.endswith((".absent", ".error")) else name
                self.in_flight.discard(base)
                if name.endswith((".absent", ".error")):
                    self.pushed_markers.add(name)  # the spool keeps markers: it answers from them
                else:
                    (self.dir / name).unlink(missing_ok=True)  # a later request refetches it
            return True


def _safe_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "._-" for c in name)
