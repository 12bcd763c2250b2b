"""The benchmark's session: SeaweedFS over TLS on the work dir's data, the built data, the stages."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from build import build, log, pgbackrest_config, reuse

TLS_DIR = "tls"
RESTORE_IMAGE = "restore-fs.img"
STAGES = ("fetch", "wal", "replay", "rss", "cache", "xdist")
#: run only when named (``--only paths``): they write results of their own, not results.json/md
EXTRA_STAGES = ("paths",)


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work: Path = args.workdir.absolute()
        self.s3 = None
        self.state: dict = {}
        self.results: dict = {"figures": {}, "runs": {}}
        self.started = time.monotonic()
        self.restore_root: Path = self.work  # where every restore writes: a fresh ext4 when one can be mounted
        self.restore_fs = f"the work dir's own filesystem ({self.work})"
        self._loop: str | None = None

    # -- session ---------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        from tool_support import self_signed_cert

        from pytest_pgrestore.demo._seaweed import SeaweedS3

        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)
        state = reuse(self.work) if self.args.reuse else None
        if state is None:
            for name in ("src", "bb-repo", "walg-repo", "s3", "pgbr-tool", "barman-tool", TLS_DIR):
                shutil.rmtree(self.work / name, ignore_errors=True)
            (self.work / "state.json").unlink(missing_ok=True)
        tls = self.work / TLS_DIR
        self.cert, key = (tls / "s3-cert.pem", tls / "s3-key.pem") if tls.is_dir() else self_signed_cert(tls)
        self.s3 = SeaweedS3(self.work / "s3", tls=(self.cert, key), start_timeout=60).start()
        try:
            if state is None:
                log(f"building the data in {self.work} (pgbench -i -s {self.args.scale})")
                state = build(self.work, self.s3, self.cert, scale=self.args.scale,
                              pgbench_seconds=self.args.pgbench_seconds)
            self.state = state
            self.pgbackrest = pgbackrest_config(self.work, self.s3)
            if self.args.restore_fs == "ext4":
                self._mount_restore_fs()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None:
            for _ in range(20):  # a server the last drill stopped may still be on its way out
                if subprocess.run(["umount", str(self.restore_root)], capture_output=True).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                subprocess.run(["umount", "--lazy", str(self.restore_root)], check=False)
            subprocess.run(["losetup", "-d", self._loop], check=False, capture_output=True)
            (self.work / RESTORE_IMAGE).unlink(missing_ok=True)
            self._loop = None
        if self.s3 is not None:
            self.s3.stop()

    def _mount_restore_fs(self) -> None:
        """Every restore writes into a fresh ext4 with a journal (a sparse image on a loop device,
        direct I/O: one page cache), as on a CI runner's disk.

        This VM's root filesystem is ext4 without a journal, and there ext4 skips inodes freed in
        the last minutes when it creates a file (``recently_deleted`` reads each one's inode
        block: ~0.4 ms a file in ``perf``). Every run of a contender follows the deletion of the
        last one's ~980 files, so the contenders that create a cluster's files (ours, the tools,
        the ceiling writing the backup's files) slowed down round by round while the one-file
        ceiling did not. ``--restore-fs=workdir`` measures on the work dir's filesystem instead."""
        image, mnt = self.work / RESTORE_IMAGE, self.work / "restore-fs"
        size = max(16 << 30, 8 * int(self.state.get("db_bytes", 1 << 30)))
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        try:
            image.unlink(missing_ok=True)
            with open(image, "wb") as f:
                f.truncate(size)
            subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "pgr-bench", str(image)], check=True, capture_output=True)
            loop = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)], check=True,
                                  capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError) as exc:
            return self._no_restore_fs(image, str(exc))
        mnt.mkdir(exist_ok=True)
        mounted = subprocess.run(["mount", loop, str(mnt)], capture_output=True, text=True)
        if mounted.returncode != 0:
            subprocess.run(["losetup", "-d", loop], check=False)
            return self._no_restore_fs(image, mounted.stderr.strip())
        self._loop, self.restore_root = loop, mnt
        mnt.chmod(0o755)
        self.restore_fs = f"a fresh ext4 with a journal ({size >> 30} GiB image on {loop}, direct I/O)"

    def _no_restore_fs(self, image: Path, why: str) -> None:
        image.unlink(missing_ok=True)
        log(f"no fresh ext4 for the restores ({why}); they write into {self.work}")

    @property
    def env(self) -> dict[str, str]:
        """Read-only AWS_* for our side, over the same TLS endpoint the tools use."""
        return {**self.s3.env(readonly=True), "AWS_ENDPOINT_URL": self.s3.https_endpoint,
                "AWS_CA_BUNDLE": str(self.cert), "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    @property
    def tool_env(self) -> dict[str, str]:
        """What barman-cloud and the aws CLI read (the admin key: the tools list buckets)."""
        return {"AWS_ACCESS_KEY_ID": self.s3.admin.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.admin.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": str(self.cert),
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
                "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def stages(self) -> list[str]:
        only = self.args.only
        return list(STAGES) if only == "all" else only.split(",")

    def run(self) -> None:
        self.results["machine"] = {**machine(), "restores_write_into": self.restore_fs}
        self.results["data"] = self.state
        for stage in self.stages():
            if stage == "build":  # done on entry
                continue
            t = time.monotonic()
            log(f"stage {stage} (load average {os.getloadavg()[0]:.1f})")
            getattr(self, f"stage_{stage}")()
            log(f"stage {stage} done in {time.monotonic() - t:.0f} s")
        self.results["seconds"] = round(time.monotonic() - self.started, 1)
        if any(stage in STAGES for stage in self.stages()):
            self.write()  # an extra stage alone leaves the main tables as the other stages wrote them

    # -- measuring -------------------------------------------------------------------------
    def timed(self, label: str, fn, *, setup=None, runs: int | None = None) -> float:
        """Median of ``runs`` timings of ``fn()``; each run's value is kept in the results."""
        values = []
        for _ in range(runs or self.args.runs):
            if setup:
                setup()
            t = time.monotonic()
            fn()
            values.append(time.monotonic() - t)
        self.results["runs"][label] = [round(v, 3) for v in values]
        med = round(statistics.median(values), 3)
        log(f"  {label:<58} {med:8.3f} s  ({', '.join(f'{v:.2f}' for v in values)})")
        return med

    def figure(self, name: str, **values) -> None:
        self.results["figures"][name] = values

    def fresh(self, path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        from tool_support import chown_tree

        chown_tree(path)
        return path

    def settle_memory(self, nbytes: int) -> float:
        """Touch ``nbytes`` of page cache and free it at once, so the next contender's writes all meet
        pages that were freed moments ago; returns the seconds this took (untimed for the contender).

        The host of this VM reclaims guest memory that has been free for about a second: writing 1 GiB
        into the page cache costs ~0.2 s of system time on just-freed pages and ~0.7-2 s on reclaimed
        ones. Without this, a contender's time swings with how long the memory it meets has sat free,
        which has nothing to do with the contender. Every contender gets the same treatment. The pad's
        pages are dirty and are dropped by the unlink, never written to disk."""
        pad = self.work / "memory-pad"
        t = time.monotonic()
        fd = os.open(pad, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            block = bytes(1 << 20)
            for _ in range(-(-nbytes // len(block))):
                os.write(fd, block)
        finally:
            os.close(fd)
            pad.unlink()
        return time.monotonic() - t

    def write(self) -> None:
        from report import markdown

        out = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.results, indent=1) + "\n")
        (out / "results.md").write_text(markdown(self.results))
        log(f"results: {out / 'results.json'}, {out / 'results.md'}")

    # -- stages (each in its own module) -----------------------------------------------------
    def stage_fetch(self) -> None:
        from fetch_bench import run

        run(self)

    def stage_wal(self) -> None:
        from wal_bench import run

        run(self)

    def stage_replay(self) -> None:
        from replay_bench import run

        run(self)

    def stage_rss(self) -> None:
        from replay_bench import run_rss

        run_rss(self)

    def stage_cache(self) -> None:
        from replay_bench import run_cache

        run_cache(self)

    def stage_xdist(self) -> None:
        from replay_bench import run_xdist

        run_xdist(self)

    def stage_paths(self) -> None:
        from paths_bench import run

        run(self)


def machine() -> dict:
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return None

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), None)
    mem = next((int(ln.split()[1]) // 1024 for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), None)
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_mb": mem, "kernel": platform.release(),
            "os": cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]), "python": platform.python_version(),
            "postgresql": cmd(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
            "pgbackrest": cmd(["pgbackrest", "version"]),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
