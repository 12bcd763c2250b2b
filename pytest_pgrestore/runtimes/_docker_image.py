"""The image a restore runs in: present or pulled (failing fast), its postgres user, its utilities.

Nothing here starts a server: the uid/gid come from the image's /etc/passwd through a created,
never started container, and the utilities run with ``docker exec`` in the restore's container.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from ..errors import BinariesNotFound, PgRestoreError

if TYPE_CHECKING:
    from ._container import PgContainer


class _HasContainer(Protocol):
    """What the image's tools need of the runtime: the container they run in."""

    def container(self) -> PgContainer: ...

__all__ = ["Image", "ImageUnavailable", "ImageTools", "ContainerPath", "resolve_image", "short_error"]

_PULL_STALL_S = 30  # a pull that makes no progress for this long fails


class ImageUnavailable(PgRestoreError):
    """The image is neither present nor pullable, or cannot serve this backup."""


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:300]


@dataclass
class Image:
    ref: str
    id: str
    owner: tuple[int, int]
    path: str  # the image's PATH, where postgres is looked for
    pg_major: int | None  # from the image's PG_MAJOR, when it declares one


_owners: dict[str, tuple[int, int]] = {}


def resolve_image(client, ref: str) -> Image:
    import docker.errors

    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        img = _pull(client, ref)
    env = dict(e.split("=", 1) for e in img.attrs.get("Config", {}).get("Env") or [] if "=" in e)
    major = env.get("PG_MAJOR", "")
    return Image(ref, img.id, _image_owner(client, img), env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                 int(major) if major.isdigit() else None)


def _pull(client, ref: str):
    """Pull, failing fast: a pull that makes no progress for _PULL_STALL_S seconds fails.

    The SDK's pull has no read timeout, so it runs in a daemon thread whose progress we watch.
    """
    import queue
    import threading

    from docker.utils import parse_repository_tag

    repo, tag = parse_repository_tag(ref)
    events: queue.Queue = queue.Queue()

    def pull() -> None:
        try:
            for line in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                events.put(("line", line))
            events.put(("done", None))
        except Exception as exc:
            events.put(("error", exc))

    threading.Thread(target=pull, name=f"pull-{ref}", daemon=True).start()
    try:
        while True:
            try:
                kind, item = events.get(timeout=_PULL_STALL_S)
            except queue.Empty:
                raise TimeoutError(f"no progress for {_PULL_STALL_S}s") from None
            if kind == "error":
                raise item
            if kind == "line" and "error" in item:
                raise RuntimeError(item["error"])
            if kind == "done":
                return client.images.get(ref)
    except Exception as exc:
        raise ImageUnavailable(
            f"image {ref} is not present on the Docker daemon and could not be pulled: {short_error(exc)}",
            checked=f"docker image inspect {ref}; docker pull {ref}",
            fix=f"docker pull {ref} (or docker load) where the registry is reachable, or name an image the "
                "daemon has with --restore-image (a {major} placeholder is filled in)") from exc


def _image_owner(client, img) -> tuple[int, int]:
    """uid/gid of the image's ``postgres`` user, read from its /etc/passwd (no container runs)."""
    if img.id in _owners:
        return _owners[img.id]
    probe = client.containers.create(img.id, command=["true"], entrypoint=[], labels={})
    try:
        stream, _ = probe.get_archive("/etc/passwd")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.getmembers()[0]
            file = tar.extractfile(member)
            if file is None:  # a link or a directory: nothing to read users from
                raise ImageUnavailable("the image's /etc/passwd is not a regular file",
                                       checked="the image's /etc/passwd",
                                       fix="use an image built like the official postgres images, or pass "
                                           "--restore-image")
            passwd = file.read().decode("utf-8", "replace")
    finally:
        probe.remove(force=True, v=True)
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == "postgres" and fields[2].isdigit() and fields[3].isdigit():
            _owners[img.id] = int(fields[2]), int(fields[3])
            return _owners[img.id]
    raise ImageUnavailable("the image has no postgres user to run the server as",
                           checked="the image's /etc/passwd",
                           fix="use an image built like the official postgres images, or pass --restore-image")


class ContainerPath(PurePosixPath):
    """A path inside the container; ``exists()`` is answered there."""

    tools: ImageTools | None = None

    def exists(self) -> bool:
        return self.tools is not None and self.tools.has(str(self))


class ImageTools:
    """PostgreSQL binaries inside the container: the PgBinaries protocol, run with docker exec."""

    def __init__(self, runtime: _HasContainer, image: Image, major: int) -> None:
        self.runtime, self.image, self.major = runtime, image, major
        self._version: str | None = None
        self._bindir: Path | None = None

    @property
    def origin(self) -> str:
        return f"image {self.image.ref} ({self.image.id[7:19]})"

    def _describe(self) -> None:
        out = self.runtime.container().exec(["sh", "-c", "command -v postgres && postgres --version"])
        lines = out.stdout.strip().splitlines()
        m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", out.stdout)
        if out.returncode != 0 or not m or len(lines) < 2:
            raise ImageUnavailable(f"image {self.image.ref} has no usable postgres on its PATH",
                                   checked=f"command -v postgres; postgres --version: {out.stderr.strip()[:200]}",
                                   fix="use a postgres image, or pass --restore-image")
        self._bindir = Path(lines[0]).parent
        self._version = f"{m.group(1)}.{m.group(2) or 0}"
        if int(m.group(1)) != self.major:
            raise BinariesNotFound(f"image {self.image.ref} serves PostgreSQL {m.group(1)}, the backup needs "
                                   f"{self.major}", checked="postgres --version inside the container",
                                   fix="use --restore-image with a {major} placeholder (postgres:{major})")

    @property
    def version(self) -> str:
        if self._version is None:
            self._describe()
        assert self._version is not None, "_describe sets it or raises"
        return self._version

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._describe()
        assert self._bindir is not None, "_describe sets it or raises"
        return self._bindir

    def tool(self, name: str) -> ContainerPath:
        """The utility's path inside the container (``exists()`` asks the container)."""
        path = ContainerPath(self.bindir / name)
        path.tools = self
        return path

    def has(self, name: str) -> bool:
        return self.runtime.container().exec(["sh", "-c", 'command -v "$1"', "sh", name]).returncode == 0

    def run(self, name: str, args: list[str], *, timeout: float | None = None):
        out = self.runtime.container().exec([name, *args])
        return subprocess.CompletedProcess([name, *args], out.returncode, out.stdout, out.stderr)
