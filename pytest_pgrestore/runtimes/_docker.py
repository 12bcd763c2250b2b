"""The docker runtime: serve the restored PGDATA in a throwaway container of the backup's version.

The restore itself (fetch, unpack, WAL spool) happens on the runner, as for the local runtime;
the container only serves the run dir.  It runs ``postgres`` from the image's PATH as the image's
own ``postgres`` user (its uid/gid read from the image's /etc/passwd), never the entrypoint.
PostgreSQL utilities (pg_controldata, pg_verifybackup) run inside the same container.

Transfer: ``bind`` mounts the run dir at the same path (the daemon shares our filesystem and we
can hand the files to the server's uid); ``copy`` copies it into an anonymous volume at the same
path (docker:dind, remote daemons).  ``auto`` tries bind and checks a token through the mount.
Network: ``bridge`` publishes the port on the daemon's address (127.0.0.1 for a local daemon) and
the hba admits only the bridge gateway; ``host`` listens on 127.0.0.1 in the daemon's network.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from ..errors import BinariesNotFound, PgRestoreError
from ..restore._instance import RestoredInstance
from ._base import Runtime
from ._container import HEARTBEAT_TICK, STALE_AFTER, SUPERVISOR, PgContainer, SpoolMirror
from ._docker_image import Image, ImageTools, ImageUnavailable, resolve_image, short_error
from ._docker_server import ContainerInstance, DockerServer, scram_verifier
from ._docker_sweep import run_labels, sweep_containers

log = logging.getLogger(__name__)

__all__ = ["DockerRuntime", "DockerServer", "DockerUnavailable", "ImageUnavailable", "ImageTools", "runtime_report",
           "docker_or_local", "scram_verifier"]


class DockerUnavailable(PgRestoreError):
    """No Docker daemon answers."""


def _connect(timeout: float):
    """A testcontainers DockerClient (DOCKER_HOST, docker context, testcontainers properties)."""
    try:
        from testcontainers.core.docker_client import DockerClient, get_docker_host
    except ImportError as exc:
        raise DockerUnavailable("the docker runtime needs the docker extra",
                                checked="import testcontainers, docker",
                                fix="pip install 'pytest-pgrestore[docker]', or use --restore-runtime=local") from exc
    where = get_docker_host() or "the default socket (unix:///var/run/docker.sock)"
    try:
        tc = DockerClient(timeout=timeout)
        tc.client.ping()
    except Exception as exc:
        raise DockerUnavailable(
            f"no Docker daemon answers at {where}: {short_error(exc)}",
            checked="DOCKER_HOST, the current docker context and ~/.testcontainers.properties",
            fix="start Docker or point DOCKER_HOST at a daemon (unix:///path/docker.sock or tcp://host:2375); "
                "or use --restore-runtime=local with PostgreSQL installed (auto picks it by itself)") from exc
    return tc, where


class DockerRuntime(Runtime):
    """Chooses the image, creates the container, starts postgres in it, removes it."""

    name = "docker"

    def __init__(self, settings, *, tc=None, where: str | None = None, evidence: dict | None = None) -> None:
        super().__init__(settings, evidence=evidence)
        if tc is None:
            tc, where = _connect(timeout=max(120.0, float(settings.timeout)))
        assert where is not None, "a client passed in comes with the daemon address it talks to"
        self.tc, self.where = tc, where
        self.client = tc.client
        self.removed = sweep_containers(self.client)
        self.image: Image | None = None
        self.tools: ImageTools | None = None
        self.mode: str | None = None
        self._container: PgContainer | None = None
        self.server: DockerServer | None = None

    # -- image and tools ----------------------------------------------------------------------
    def binaries(self, major: int) -> ImageTools:
        ref = self.settings.image.replace("{major}", str(major))
        if self.image is None or self.image.ref != ref:
            self.image = resolve_image(self.client, ref)
            if self.image.pg_major is not None and self.image.pg_major != major:
                raise BinariesNotFound(f"image {ref} declares PG_MAJOR={self.image.pg_major}, the backup "
                                       f"needs PostgreSQL {major}", checked=f"docker image inspect {ref}",
                                       fix="use --restore-image with a {major} placeholder (postgres:{major})")
            self.tools = ImageTools(self, self.image, major)
        assert self.tools is not None, "made with the image above"
        return self.tools

    @property
    def owner(self) -> tuple[int, int] | None:
        """Who owns the run dir on this side: the image's postgres user when we can chown (root);
        else nobody changes owners here and the copy into the container sets them."""
        return self.image.owner if self.image and os.geteuid() == 0 else None

    def describe(self) -> str:
        mode = self.mode or self.settings.docker_mode
        return (f"docker at {self.where}, image {self.image.ref if self.image else '?'}, "
                f"{mode} transfer, {self.settings.docker_network} network")

    # -- the container ----------------------------------------------------------------------------
    def attach(self, run, *, port: int | None) -> None:
        """Bind the runtime to a run dir and the port postgres will listen on: picked now when
        not given, since the container publishes it when it is created."""
        if port is None:
            from ..restore._rundir import free_port

            port = free_port()
        super().attach(run, port=port)

    def wal_heartbeat(self) -> Path:
        """The harness's pid is not visible in the container: the wrapper watches this file."""
        return self.container().heartbeat_file

    def container(self) -> PgContainer:
        if self._container is None:
            self._container = self._create()
        return self._container

    def _create(self) -> PgContainer:
        if self.run is None or self.image is None:
            raise RuntimeError("DockerRuntime.attach() and binaries() come before the container")
        run, image = self.run, self.image
        mode = self.settings.docker_mode
        if mode == "bind" and os.geteuid() != 0:
            raise PgRestoreError("bind transfer hands the files to the image's postgres user, which needs root",
                                 checked=f"our uid {os.geteuid()}, the image's postgres uid {image.owner[0]}",
                                 fix="use --restore-docker-mode=copy (or auto, which picks it)")
        if mode == "bind":
            import docker.errors

            self.mode = "bind"
            try:
                return self._new_container(copy=False)
            except docker.errors.APIError as exc:
                raise PgRestoreError(f"the Docker daemon cannot bind-mount the run dir {run.path}: "
                                     f"{short_error(exc)}", checked=f"--restore-docker-mode=bind with the daemon at "
                                     f"{self.where}", fix="use --restore-docker-mode=copy (or auto): a daemon in "
                                     "another container or machine (docker:dind, a tcp DOCKER_HOST) does not "
                                     "see this runner's files") from exc
        if mode == "auto" and os.geteuid() == 0:  # as non-root only copy can set the files' owner
            import docker.errors

            try:
                pgc = self._new_container(copy=False)
            except docker.errors.APIError as exc:  # "bind source path does not exist": another filesystem
                log.info("bind mount of %s refused (%s)", run.path, short_error(exc))
            else:
                if self._sees_our_files(pgc):
                    self.mode = "bind"
                    return pgc
                pgc.remove()
            log.info("the Docker daemon does not see %s: copying the run dir into the container", run.path)
        self.mode = "copy"
        return self._new_container(copy=True)

    def _new_container(self, *, copy: bool) -> PgContainer:
        from docker.types import Mount

        run, image = self.attached(), self.image
        assert image is not None, "_create checked it"
        if os.geteuid() == 0:
            run.owner = image.owner
            run.chown_tree(whole=True)  # the container's supervisor writes there: the container is the boundary
        socket_dir = run.socket_dir()
        if copy:
            mounts = [Mount(target=str(run.path), source=None, type="volume")]
        else:
            mounts = [Mount(target=str(run.path), source=str(run.path), type="bind")]
        if not socket_dir.is_relative_to(run.path):
            mounts.append(Mount(target=str(socket_dir), source=None if copy else str(socket_dir),
                                type="volume" if copy else "bind"))
        if not run.pgdata.is_relative_to(run.path):  # a manual restore into a directory of the user's
            if copy:
                raise PgRestoreError(f"restoring into {run.pgdata} needs the Docker daemon to see it",
                                     checked="the transfer is a copy into the container, whose result "
                                             "would stay there", fix="use --restore-docker-mode=bind with a local "
                                             "daemon, or leave out --pgdata")
            mounts.append(Mount(target=str(run.pgdata), source=str(run.pgdata), type="bind"))
        labels = run_labels(run.path.name, run.path, lifetime=float(self.settings.timeout) + 3600)
        labels.update(self._ryuk_labels())
        net = self._network_kwargs()
        cmd = [str(run.path), str(run.path / "heartbeat"), str(int(STALE_AFTER / HEARTBEAT_TICK))]
        container = self.client.containers.create(
            image.id, entrypoint=["/bin/sh", "-c", SUPERVISOR, "pgrestore-supervisor"], command=cmd,
            user=f"{image.owner[0]}:{image.owner[1]}", environment={"PATH": image.path, "LC_ALL": "C"},
            labels=labels, name=f"pgrestore-{run.path.name}-{secrets.token_hex(2)}", init=True,
            mounts=mounts, shm_size="256m", detach=True, working_dir="/", **net)
        pgc = PgContainer(self.client, container, run_dir=run.path, owner=image.owner, copy=copy)
        try:
            if copy:
                pgc.beat()
                paths, dirs = _walk(run.path)
                if not socket_dir.is_relative_to(run.path):
                    dirs.append(socket_dir)
                pgc.put(paths, dirs=dirs)
            pgc.start()
        except BaseException:
            pgc.remove()
            raise
        return pgc

    def _ryuk_labels(self) -> dict[str, str]:
        """Ryuk (when enabled) reaps the container if we die; never for a run that may be kept."""
        from testcontainers.core.config import testcontainers_config as tc_config

        if tc_config.ryuk_disabled or self.settings.keep != "never":
            return {}
        from testcontainers.core.container import Reaper
        from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

        Reaper.get_instance()
        return {LABEL_SESSION_ID: SESSION_ID}

    def _network_kwargs(self) -> dict:
        if self.settings.docker_network == "host":
            return {"network_mode": "host"}
        import docker.errors

        try:
            self.client.networks.get("bridge")
        except docker.errors.NotFound:
            raise PgRestoreError("the Docker daemon has no bridge network to publish the port on",
                                 checked=f"docker network inspect bridge at {self.where}",
                                 fix="use --restore-docker-network=host (the daemon runs with --bridge=none)"
                                 ) from None
        host_ip = "127.0.0.1" if self.where.startswith(("unix:", "npipe:", "the default")) else None
        port = self.listen_port()
        return {"ports": {f"{port}/tcp": (host_ip, port) if host_ip else port}}

    def _sees_our_files(self, pgc: PgContainer) -> bool:
        token = secrets.token_hex(8)
        probe = self.attached().path / ".bind-probe"
        probe.write_text(token)
        try:
            out = pgc.exec(["sh", "-c", 'cat "$1"', "sh", str(probe)])
            return out.returncode == 0 and out.stdout.strip() == token
        finally:
            probe.unlink(missing_ok=True)

    # -- serving ------------------------------------------------------------------------------------
    def hba_peer(self) -> str:
        """The address connections to the published port arrive from, as the server sees them."""
        if self.settings.docker_network == "host":
            return "127.0.0.1/32"
        net = self.client.networks.get("bridge")
        for cfg in net.attrs.get("IPAM", {}).get("Config") or []:
            if cfg.get("Gateway"):
                return f"{cfg['Gateway']}/32"
        subnet = (net.attrs.get("IPAM", {}).get("Config") or [{}])[0].get("Subnet")
        if subnet:  # gateway not recorded: the first address of the subnet
            import ipaddress

            return f"{next(ipaddress.ip_network(subnet).hosts())}/32"
        raise PgRestoreError("the Docker bridge network has no gateway to admit",
                             checked="docker network inspect bridge",
                             fix="use --restore-docker-network=host")

    def start(self, *, config_file: Path, settings: dict[str, str], socket_dir: Path, spool,
              extra_wal: dict[str, str], kept: dict[str, str]) -> DockerServer:
        """Copy mode stages the spool, ``extra_wal`` and what quarantine ``kept`` out first.  The
        socket directory is the run dir's, as the container mounts it."""
        run, pgc = self.attached(), self.container()
        hba = run.path / "pg_hba.conf"
        hba.write_text("# pytest-pgrestore: trust only on the private socket; TCP needs the per-run password\n"
                       f"local all all trust\nhost all all {self.hba_peer()} scram-sha-256\n")
        listen = "127.0.0.1" if self.settings.docker_network == "host" else "*"
        argv = ["postgres", "-D", str(run.pgdata), "-c", f"config_file={config_file}"]
        for name, value in {**settings, "listen_addresses": listen, "port": str(self.listen_port())}.items():
            argv += ["-c", f"{name}={value}"]
        mirror = None
        if pgc.copy:
            mirror = self._stage(pgc, spool, extra_wal, kept)
        self._write_argv(pgc, argv)
        pgc.go(mirror)
        host = "127.0.0.1"
        if self.settings.docker_network == "bridge" and not self.where.startswith(("unix:", "the default")):
            host = self.tc.host()
        mounted = str(run.socket_dir())
        self.server = DockerServer(pgc, run_dir=run.path, host=host, port=self.listen_port(),
                                   socket_dir=None if pgc.copy else mounted, log_file=run.log_file,
                                   container_socket_dir=mounted, evidence=self.evidence,
                                   binaries=self.tools, admin_user=self.settings.user, pgdata=run.pgdata)
        return self.server

    def _write_argv(self, pgc: PgContainer, argv: list[str]) -> None:
        """postgres's arguments reach the waiting supervisor through a file (NUL-free, one per line)."""
        if any("\n" in a for a in argv):
            raise PgRestoreError("a server setting holds a newline", checked="the postgres command line",
                                 fix="remove the newline from the setting")
        pgc.put_bytes(self.attached().path / "postgres.args", ("\n".join(argv) + "\n").encode())

    def _stage(self, pgc: PgContainer, spool, extra_wal: dict[str, str], kept: dict[str, str]) -> SpoolMirror:
        """Copy mode: every planned segment and every history file, then what quarantine changed."""
        spool.fetch_all(extra_wal, timeout=float(self.settings.timeout))
        run = self.attached()
        if kept:
            pgc.exec(["rm", "-f", *(str(run.pgdata / name) for name in kept)])
        changed = [p for p in run.path.iterdir() if p.is_file()]
        changed += [run.pgdata / "postgresql.auto.conf", run.pgdata / "recovery.signal"]
        evidence, dirs = _walk(run.path / "evidence")
        spool_files = [p for p in run.spool.iterdir() if p.is_file() and not p.name.startswith(".")]
        pgc.put(changed + evidence + spool_files, dirs=dirs + [run.spool, run.spool / "req"])
        for p in spool_files:
            if not p.name.endswith((".absent", ".error")):
                p.unlink()
        return SpoolMirror(pgc, run.spool)

    def close(self, *, keep: bool = False) -> None:
        """Stop and remove the container (the server's stop does both), unless kept."""
        if self._container is None:
            return
        if keep:
            self._container.keep()
            return
        self._container.shutdown()
        self._container.remove()
        self._container = None
        self.client.close()

    def instance(self, **kwargs) -> RestoredInstance:
        if self.server is not None and self.server.socket_dir is None:
            return ContainerInstance(**kwargs, server=self.server)
        return RestoredInstance(**kwargs)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Files (symlinks included, not followed) and directories under ``root``, parents first."""
    files, dirs = [], []
    for dirpath, dirnames, names in os.walk(root):
        dirs.append(Path(dirpath))
        files += [Path(dirpath, n) for n in names]
        files += [Path(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
    return files, dirs


def docker_or_local(settings, major: int, *, evidence: dict | None = None) -> tuple[DockerRuntime | None, str]:
    """``--restore-runtime=auto``: docker when a daemon answers and the image is present or
    pullable, else local; the reason says which and why."""
    ref = settings.image.replace("{major}", str(major))
    try:
        rt = DockerRuntime(settings, evidence=evidence)
        rt.binaries(major)
    except (DockerUnavailable, ImageUnavailable, BinariesNotFound) as exc:
        return None, f"local: {exc.what}"
    return rt, f"docker: the daemon at {rt.where} answers and has {ref}"


def runtime_report(settings) -> str | None:
    """One header line: which runtime restores will use and why (None for local)."""
    if settings.runtime == "local":
        return None
    network, mode = settings.docker_network, settings.docker_mode
    try:
        tc, where = _connect(timeout=3.0)
        tc.client.close()
    except DockerUnavailable as exc:
        if settings.runtime == "auto":
            return f"runtime auto: local, because {exc.what}"
        return f"runtime docker: {exc.what}; restores will fail (set DOCKER_HOST, or use --restore-runtime=local)"
    if settings.runtime == "auto":
        return (f"runtime auto: docker, the daemon at {where} answers (image {settings.image}, {network} network, "
                f"{mode} transfer); local for a restore whose image is neither present nor pullable")
    return f"runtime docker: the daemon at {where} (image {settings.image}, {network} network, {mode} transfer)"
