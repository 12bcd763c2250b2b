"""Real pgBackRest and barman-cloud sources for the integration tests.

* :func:`self_signed_cert` — a certificate for 127.0.0.1, for SeaweedFS's HTTPS S3 port
  (pgBackRest speaks S3 only over TLS).
* :class:`ToolSource` — a :class:`~pytest_pgrestore.demo._source.SourceCluster` whose
  archive_command is a backup tool's own (``pgbackrest archive-push %p``,
  ``barman-cloud-wal-archive …``) instead of the demo's copy script.
* :class:`PgBackRest` / :class:`BarmanCloud` — the real tools, configured for one source.

The restore side never sees anything written here: it gets a URL and AWS_* variables only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

from pytest_pgrestore.demo._source import DemoSourceError, SourceCluster

SYSTEM_PYTHON = "/usr/bin/python3"  # the dev venv's interpreter lives under /root (0700)


def server_ids() -> tuple[int, int]:
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def chown_tree(path: Path) -> None:
    uid, gid = server_ids()
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def self_signed_cert(dest: Path) -> tuple[Path, Path]:
    """(cert, key) for SAN IP:127.0.0.1; the cert is world-readable (barman's archive_command reads it)."""
    dest.mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)
    cert, key = dest / "s3-cert.pem", dest / "s3-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    cert.chmod(0o644)
    return cert, key


class ToolSource(SourceCluster):
    """A source cluster that archives through ``archive_command`` (set before :meth:`init`)."""

    def __init__(self, workdir: Path, *, archive_command: str, **kwargs) -> None:
        super().__init__(workdir, repo=Path(workdir) / "unused-repo", **kwargs)
        self.archive_command = archive_command

    def _write_conf(self) -> None:
        super()._write_conf()
        with (self.pgdata / "postgresql.conf").open("a") as conf:  # the last setting wins
            conf.write(f"archive_command = '{self.archive_command.replace(chr(39), chr(39) * 2)}'\n")

    def wait_archived(self, name: str, timeout: float = 60.0) -> Path:
        """Wait until the archiver reports ``name`` (or a later file) archived."""
        deadline = time.monotonic() + timeout
        while True:
            last, failed = self._one("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")
            done = self.pgdata / "pg_wal" / "archive_status" / f"{name}.done"
            if done.exists() or (last and last[:8] == name[:8] and last >= name):
                return done
            if time.monotonic() > deadline:
                raise DemoSourceError(f"{name} was not archived within {timeout:.0f} s",
                                      checked=f"pg_stat_archiver: last={last} failed={failed}\n  "
                                              f"server log tail:\n    {self._log_tail()}")
            time.sleep(0.05)

    def current_segment(self) -> str:
        return self._one("SELECT pg_walfile_name(pg_current_wal_lsn())")[0]


def run_as_server(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    uid, gid = server_ids()
    base = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": "/tmp"}
    proc = subprocess.run(argv, capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout,
                          user=uid, group=gid, extra_groups=[], cwd=cwd or "/tmp")
    if proc.returncode != 0:
        raise DemoSourceError(f"{Path(argv[0]).name} exited with {proc.returncode}",
                              checked=f"{shlex.join(argv)}\n  output:\n    {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


# ---------------------------------------------------------------- pgBackRest


class PgBackRest:
    """``pgbackrest`` for one stanza, with a config file of its own (the production side's)."""

    def __init__(self, workdir: Path, *, stanza: str = "main", repo: dict[str, str],
                 compress_type: str = "zst", extra: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.stanza = stanza
        self.conf = workdir / "pgbackrest.conf"
        self.repo = repo
        self.options = {"compress-type": compress_type, **(extra or {})}

    @classmethod
    def posix(cls, workdir: Path, repo_path: Path, **kwargs) -> PgBackRest:
        return cls(workdir, repo={"repo1-path": str(repo_path)}, **kwargs)

    @classmethod
    def s3(cls, workdir: Path, *, endpoint_port: int, bucket: str, path: str, key: str, secret: str,
           **kwargs) -> PgBackRest:
        return cls(workdir, repo=cls.s3_options(1, endpoint_port=endpoint_port, bucket=bucket, path=path,
                                                key=key, secret=secret), **kwargs)

    @staticmethod
    def s3_options(n: int, *, endpoint_port: int, bucket: str, path: str, key: str, secret: str) -> dict[str, str]:
        """repo<n>-* options for an S3 repo on SeaweedFS's HTTPS port (self-signed: no verification)."""
        return {f"repo{n}-{k}": v for k, v in {
            "type": "s3", "path": path, "s3-bucket": bucket, "s3-endpoint": "127.0.0.1",
            "s3-port": str(endpoint_port), "s3-region": "us-east-1", "s3-key": key, "s3-key-secret": secret,
            "s3-uri-style": "path", "storage-verify-tls": "n"}.items()}

    @property
    def archive_command(self) -> str:
        return f"pgbackrest --config={self.conf} --stanza={self.stanza} archive-push %p"

    def write_config(self, src: SourceCluster) -> None:
        for sub in ("log", "lock", "spool"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        lines = ["[global]", *(f"{k}={v}" for k, v in self.repo.items()),
                 f"log-path={self.workdir / 'log'}", f"lock-path={self.workdir / 'lock'}",
                 f"spool-path={self.workdir / 'spool'}", "log-level-file=off", "log-level-console=warn",
                 "start-fast=y", "repo1-retention-full=9999",
                 *(f"{k}={v}" for k, v in self.options.items()),
                 f"[{self.stanza}]", f"pg1-path={src.pgdata}", f"pg1-socket-path={src.workdir / 'sock'}",
                 "pg1-port=5432", "pg1-user=postgres"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o600)
        chown_tree(self.workdir)
        if "repo1-type" not in self.repo:
            Path(self.repo["repo1-path"]).mkdir(parents=True, exist_ok=True)
            chown_tree(Path(self.repo["repo1-path"]))

    def run(self, *args: str, timeout: float = 300) -> str:
        argv = ["pgbackrest", f"--config={self.conf}", f"--stanza={self.stanza}", *args]
        return run_as_server(argv, timeout=timeout).stdout

    def backup(self, kind: str = "full", *extra: str) -> str:
        """Take a backup; returns its label."""
        before = set(self.labels())
        self.run("backup", f"--type={kind}", *extra)
        new = sorted(set(self.labels()) - before)
        assert len(new) == 1, new
        return new[0]

    def info(self) -> dict:
        import json

        return json.loads(self.run("info", "--output=json"))[0]

    def labels(self) -> list[str]:
        return [b["label"] for b in self.info().get("backup", [])]


def pgbackrest_source(workdir: Path, tool: PgBackRest, **kwargs) -> ToolSource:
    """A started source whose WAL goes through ``tool``, its stanza created and checked.

    Its ``new_timeline()`` recovers through ``pgbackrest archive-get``, as a real failover would.
    """
    src = ToolSource(workdir, archive_command=tool.archive_command, **kwargs)
    try:
        src.init()
        (src.workdir / "restore_wal.sh").write_text(
            f"#!/bin/sh\nexec pgbackrest --config={tool.conf} --stanza={tool.stanza} archive-get \"$1\" \"$2\"\n")
        tool.write_config(src)
        src.start()
        tool.run("stanza-create")
        tool.run("check")
    except BaseException:
        src.close()
        raise
    return src


# ---------------------------------------------------------------- barman-cloud

_BARMAN_PACKAGES = ("barman", "boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3",
                    "psycopg2")


def barman_site() -> Path:
    """A copy of barman-cloud and its dependencies the server user can import with the system Python.

    archive_command runs as ``postgres``, which cannot enter the dev venv under /root; the copy is
    made once per barman version under /var/tmp.
    """
    version = importlib.metadata.version("barman")
    key = hashlib.sha256("|".join(f"{p}={importlib.metadata.version(p)}" for p in _BARMAN_PACKAGES).encode())
    dest = Path("/var/tmp/pytest-pgrestore-barman") / f"{version}-{key.hexdigest()[:10]}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".site-", dir=dest.parent))
    for package in _BARMAN_PACKAGES:
        dist = importlib.metadata.distribution(package)
        for file in dist.files or ():
            parts = Path(file).parts
            if not parts or parts[0].endswith((".dist-info", ".egg-info")) or parts[0] in ("..", "bin"):
                continue
            src = Path(dist.locate_file(file))
            target = tmp / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_file():
                shutil.copy2(src, target)
    for root, _dirs, files in os.walk(tmp):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    try:
        os.rename(tmp, dest)
    except OSError:  # a parallel worker won
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


class BarmanCloud:
    """barman-cloud for one server name at ``s3://bucket/path`` over the HTTPS endpoint."""

    def __init__(self, workdir: Path, *, endpoint: str, ca_bundle: Path, bucket: str, path: str, server: str,
                 key: str, secret: str, wal_compression: str | None = "gzip") -> None:
        self.workdir, self.endpoint, self.ca_bundle = workdir, endpoint, ca_bundle
        self.url = f"s3://{bucket}/{path}".rstrip("/")
        self.server = server
        self.env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CA_BUNDLE": str(ca_bundle), "AWS_EC2_METADATA_DISABLED": "true",
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        self.wal_compression = wal_compression
        self.script = workdir / "barman_wal_archive.sh"

    @property
    def archive_command(self) -> str:
        return f"/bin/sh {self.script} %p"

    def write_script(self) -> None:
        """archive_command: barman-cloud-wal-archive through the system Python and a readable copy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        flag = {"gzip": " --gzip", "bzip2": " --bzip2", None: ""}[self.wal_compression]
        self.script.write_text(
            "#!/bin/sh\n" + exports + f"export PYTHONPATH={shlex.quote(str(barman_site()))}\n"
            f"exec {SYSTEM_PYTHON} -c 'import sys; from barman.clients.cloud_walarchive import main; "
            f"sys.argv[0] = \"barman-cloud-wal-archive\"; main()' --cloud-provider aws-s3 "
            f"--endpoint-url {self.endpoint}{flag} {self.url} {self.server} \"$1\"\n")
        self.script.chmod(0o700)
        os.chown(self.script, *server_ids())

    def write_restore_script(self, path: Path) -> None:
        """restore_command for the source's own failover: barman-cloud-wal-restore (%f %p)."""
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        path.write_text(
            "#!/bin/sh\n" + exports + f"export PYTHONPATH={shlex.quote(str(barman_site()))}\n"
            f"exec {SYSTEM_PYTHON} -c 'import sys; from barman.clients.cloud_walrestore import main; "
            f"sys.argv[0] = \"barman-cloud-wal-restore\"; main()' --cloud-provider aws-s3 "
            f"--endpoint-url {self.endpoint} {self.url} {self.server} \"$1\" \"$2\"\n")
        path.chmod(0o700)
        os.chown(path, *server_ids())

    def backup(self, src: SourceCluster, *, compression: str | None = None, name: str | None = None) -> str:
        """barman-cloud-backup (as root: it reads PGDATA and talks to the server's socket)."""
        import sys

        exe = Path(sys.executable).parent / "barman-cloud-backup"
        argv = [str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", self.endpoint,
                "-h", str(src.workdir / "sock"), "-p", "5432", "-U", "postgres", "--immediate-checkpoint"]
        if compression:
            argv.append({"gzip": "--gzip", "bzip2": "--bzip2"}[compression])
        if name:
            argv += ["--name", name]
        argv += [self.url, self.server]
        before = set(self.backup_ids())
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode != 0:
            raise DemoSourceError(f"barman-cloud-backup exited with {proc.returncode}",
                                  checked=f"{shlex.join(argv)}\n    {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        new = sorted(set(self.backup_ids()) - before)
        assert len(new) == 1, new
        return new[0]

    def backup_ids(self) -> list[str]:
        import json
        import sys

        exe = Path(sys.executable).parent / "barman-cloud-backup-list"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        proc = subprocess.run([str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", self.endpoint,
                               "--format", "json", self.url, self.server],
                              capture_output=True, text=True, env=env, timeout=120)
        if proc.returncode != 0:
            raise DemoSourceError("barman-cloud-backup-list failed", checked=proc.stderr[-2000:])
        return [b["backup_id"] for b in json.loads(proc.stdout)["backups_list"]]


def barman_source(workdir: Path, tool: BarmanCloud, **kwargs) -> ToolSource:
    """A started source archiving through barman-cloud-wal-archive; ``new_timeline()`` recovers
    through barman-cloud-wal-restore."""
    tool.write_script()
    src = ToolSource(workdir, archive_command=tool.archive_command, **kwargs)
    try:
        src.init()
        tool.write_restore_script(src.workdir / "restore_wal.sh")
        src.start()
    except BaseException:
        src.close()
        raise
    return src


# ---------------------------------------------------------------- scenarios


@dataclass
class ToolScenario:
    """One source's history: commits ``c0`` → backup → ``c1`` → ``rp_between`` → backup → incident →
    ``c2`` → WAL switch.  Each commit adds a row to ``t``; the demo schema is there for the drills."""

    url: str  # the source URL a restore uses
    env: dict[str, str]  # read-only AWS_* for it (empty for file://)
    commits: dict[str, list] = field(default_factory=dict)
    backups: dict[str, str] = field(default_factory=dict)  # role → backup name
    incident_at: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def rows_at(self, name: str, index: int) -> int:
        total = 0
        for key in ("c0", "c1", "c2"):
            if key == name:
                return total + index + 1
            total += len(self.commits[key])
        raise KeyError(name)

    @property
    def total_rows(self) -> int:
        return sum(len(v) for v in self.commits.values())

    def between(self, name: str, index: int) -> str:
        """An RFC 3339 time strictly between commit ``index`` and ``index + 1`` of ``name``."""
        a, b = self.commits[name][index].time, self.commits[name][index + 1].time
        mid = a + (b - a) / 2
        return mid.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def history(src: ToolSource, take_backup, *, second: str = "incr", tablespace: Path | None = None) -> ToolScenario:
    """Write the standard history into ``src``; ``take_backup(kind)`` returns the backup's name.

    With ``tablespace``, table ``in_ts`` (100 rows) lives in tablespace ``ts1`` at that directory.
    """
    sc = ToolScenario(url="", env={})
    src.demo_schema()
    if tablespace is not None:
        tablespace.mkdir(parents=True, exist_ok=True)
        os.chown(tablespace, *server_ids())
        with src.connect() as conn:
            conn.execute(f"CREATE TABLESPACE ts1 LOCATION '{tablespace}'")
            conn.execute("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS x FROM generate_series(1, 100) g")
    sc.commits["c0"] = src.commit_rows(2)
    sc.backups["b1"] = take_backup("full")
    time.sleep(1.1)  # backup stop times may be whole seconds: keep c1 clear of b1's
    sc.commits["c1"] = src.commit_rows(2)
    src.restore_point("rp_between")
    sc.backups["b2"] = take_backup(second)
    time.sleep(1.1)
    before, _deleted = src.simulate_incident()
    sc.incident_at = before.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    sc.commits["c2"] = src.commit_rows(3)
    src.switch_wal()
    return sc


def drill_with_report(sc: ToolScenario, workroot: Path, source: str, target: str, report: Path,
                      env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """An inner pytest run of one drill (the rows of ``sc`` are back) against ``source``, its
    evidence record (``--restore-report``) at ``report`` (issue 20: the gate reads it)."""
    cwd = workroot / "gate-drill"
    cwd.mkdir(exist_ok=True)
    (cwd / "test_gate_drill.py").write_text(
        f"def test_rows(restored_db):\n    assert restored_db.execute('select count(*) from t')"
        f".fetchone()[0] == {sc.total_rows}\n")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_", "PYTEST_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(cwd / "test_gate_drill.py"),
         f"--restore-source={source}", f"--restore-target={target}", f"--restore-report={report}",
         f"--restore-workdir={workroot / 'runs'}"],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)


def gate_cli(evidence: Path, source: str) -> subprocess.CompletedProcess:
    """``pgrestore gate --evidence EVIDENCE --source SOURCE --max-age 1d``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    return subprocess.run([sys.executable, "-m", "pytest_pgrestore.cli", "gate", "--evidence", str(evidence),
                           "--source", source, "--max-age", "1d"], capture_output=True, text=True, env=env,
                          timeout=120)
