"""``python -m pytest_pgrestore.demo``: a restore drill end to end, on this machine only.

1. SeaweedFS (a real S3 server) on 127.0.0.1, bucket ``demo-backups``;
2. a PostgreSQL 15 source with the demo schema: a real ``pg_basebackup``, some activity, an
   incident (a mass DELETE), a little more activity; its WAL archived by an archive_command;
3. the archive uploaded to ``s3://demo-backups/postgres``;
4. ``pytest drills/ --restore-checks`` against it with the *read-only* S3 key: every drill and
   built-in check (drills/pyproject.toml) at ``latest``, and the PITR drill at the instant just
   before the incident.  The bucket encrypts by default (AES256), as the runbook asks.

Everything it started is stopped, also on Ctrl-C; the work dir is removed unless ``--keep``
(the reports stay either way).  Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PgRestoreError

BUCKET, PREFIX = "demo-backups", "postgres"
SOURCE_URL = f"s3://{BUCKET}/{PREFIX}"
_CREATED = ("s3", "source", "archive", "archive-walg", "aws-config")  # what a run makes in the work dir
_REPORTS = ("report.xml", "report.html")
_SOCKET = "source/sock/.s.PGSQL.5432"  # where SourceCluster puts its socket
_SCRUB = ("AWS_", "WALG_", "WALE_", "PGRESTORE_")  # the developer's own settings stay out of the demo
_PYTEST_GRACE = 60.0  # seconds pytest gets to stop its servers after Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        drills = _drills_dir(args.drills)
        workdir = _workdir(args.workdir, drills.parent)
        _prepare(workdir)
        return _run(args, drills, workdir)
    except KeyboardInterrupt:
        _say("interrupted: everything the demo started has been stopped")
        return 130
    except PgRestoreError as exc:
        _say(f"failed: {exc}")
        return 1


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_pgrestore.demo",
        description="Back up a demo PostgreSQL into a local S3 server and run the restore drills against it.",
        epilog="Arguments after -- go to pytest, e.g. -- -k pitr",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work dir (archive, SeaweedFS data, source cluster) after the run",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to build everything (default: .demo/ in the repository, or "
        "/tmp/pgrestore-demo-<uid> when the postgres user cannot reach the repository)",
    )
    parser.add_argument("--drills", type=Path, help="the drills folder (default: drills/ of the repository)")
    parser.add_argument(
        "--layout",
        choices=("basebackup", "walg"),
        default="basebackup",
        help="how the archive is laid out in S3: pg_basebackup + archive_command (default), or WAL-G's "
        "basebackups_005/ + wal_005/ (written from the same real backup and WAL by the repository's "
        "test-side WAL-G writer, lz4; the drills auto-detect it)",
    )
    parser.add_argument("pytest_args", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _run(args: argparse.Namespace, drills: Path, workdir: Path) -> int:
    from ._seaweed import SeaweedS3
    from ._source import SourceCluster

    started = time.monotonic()
    reports = {name: workdir / name for name in _REPORTS}
    status = None
    try:
        source = SourceCluster(workdir / "source", repo=workdir / "archive", major=15)  # fails fast
        with SeaweedS3(workdir / "s3") as s3:
            _say(f"SeaweedFS S3 on {s3.endpoint} (started in {s3.startup_seconds:.1f} s), work dir {workdir}")
            incident_at, facts, backup = _make_backups(source)
            archive = source.repo
            if args.layout == "walg":
                archive = _as_walg(backup, source.repo, workdir / "archive-walg", drills.parent)
                facts.append(f"layout: WAL-G (basebackups_005/, wal_005/, lz4) in {archive}")
            s3.create_bucket(BUCKET)
            _encrypt_by_default(s3, BUCKET)  # before the upload: objects are encrypted as they arrive
            stats = s3.upload_dir(archive, BUCKET, PREFIX)
            _say(f"uploaded {stats.count} files ({stats.bytes / 1e6:.1f} MB) to {SOURCE_URL}")
            env = _drill_env(s3.env(readonly=True), workdir, incident_at)
            status = _pytest(_pytest_argv(drills, reports, args.pytest_args), cwd=drills.parent, env=env)
    finally:
        if not args.keep:
            _remove_created(workdir)
    _summary(status, facts, incident_at, reports, workdir, args.keep, time.monotonic() - started)
    return status


def _as_walg(backup, repo: Path, dest: Path, checkout: Path) -> Path:
    """Lay the same real backup and WAL out as WAL-G does (no wal-g binary exists here)."""
    writer_py = checkout / "tests" / "walg_writer.py"
    if not writer_py.exists():
        raise PgRestoreError("--layout walg needs the repository's tests/walg_writer.py",
                             checked=str(writer_py), fix="run the demo from a clone of the repository")
    spec = importlib.util.spec_from_file_location("pgrestore_walg_writer", writer_py)
    if spec is None or spec.loader is None:  # a .py path always has a source loader
        raise PgRestoreError(f"cannot load {writer_py} as a module", checked=str(writer_py),
                             fix="run the demo from a clone of the repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    writer = module.WalgWriter(root=dest, method="lz4")
    writer.push_backup(backup.path, history=module.history_fields(backup.history_file))
    writer.push_wal(repo / "wal")
    return dest


def _make_backups(source) -> tuple[str, list[str], object]:
    """Schema, a base backup, activity, the incident, more activity; returns the PITR target."""
    with source:
        source.demo_schema()
        source.commit_rows(3, table="activity")
        backup = source.backup()
        source.commit_rows(5, table="activity")
        before, deleted = source.simulate_incident()
        source.commit_rows(3, table="activity")
        last = source.switch_wal()
    incident_at = before.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
    facts = [
        f"source: PostgreSQL {source.pg_version}, demo schema users/models/jobs + table activity",
        f"backup: {backup.name} (pg_basebackup -Ft), WAL {backup.start_lsn} .. {backup.stop_lsn}",
        f"incident: {deleted} finished jobs deleted right after {incident_at} (the PITR target)",
        f"WAL archived up to segment {last}",
    ]
    for line in facts:
        _say(line)
    return incident_at, facts, backup


def _encrypt_by_default(s3, bucket: str) -> None:
    client = s3.admin_client()
    try:
        rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    finally:
        client.close()


def _drill_env(s3_env: dict[str, str], workdir: Path, incident_at: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    empty = workdir / "aws-config"  # so ~/.aws cannot add a profile, a region or other keys
    empty.write_text("")
    env.update(
        s3_env,
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        PGRESTORE_DRILL_INCIDENT_AT=incident_at,
    )
    return env


def _pytest_argv(drills: Path, reports: dict[str, Path], extra: list[str]) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(drills),
        f"--restore-source={SOURCE_URL}",
        "--restore-target=latest",
        "--restore-checks",  # drills/pyproject.toml: expectations, corruption and store hygiene
        "-v",
        f"--junitxml={reports['report.xml']}",
    ]
    if importlib.util.find_spec("pytest_html"):
        argv += [f"--html={reports['report.html']}", "--self-contained-html"]
    else:
        reports.pop("report.html")
        _say("pytest-html is not installed: no HTML report (pip install 'pytest-pgrestore[html]')")
    return argv + extra


def _pytest(argv: list[str], *, cwd: Path, env: dict[str, str]) -> int:
    """Run pytest in its own session, so Ctrl-C reaches it once, through us, and it can clean up."""
    _say("running: python " + " ".join(os.path.relpath(a, cwd) if a.startswith("/") else a for a in argv[1:]))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(_PYTEST_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def _summary(status, facts, incident_at, reports, workdir, keep, seconds) -> None:
    verdict = {0: "all drills passed", 1: "some drills FAILED", 5: "no drill ran"}.get(status, "pytest error")
    print("\n== pytest-pgrestore demo ==", flush=True)
    for line in facts:
        print(f"  {line}")
    print(f"  drills: every drill restored at latest; test_pitr.py restored to {incident_at}")
    for path in reports.values():
        print(f"  report: {path}")
    if keep:
        print(
            f"  kept: {workdir} (the archive is also a local source: "
            f"pytest drills/ --restore-source=file://{workdir / 'archive'})"
        )
    print(f"  result: {verdict} (pytest exit status {status}) in {seconds:.0f} s", flush=True)


# -- the work dir --------------------------------------------------------------------------------
def _drills_dir(given: Path | None) -> Path:
    candidates = [given] if given else [Path(__file__).resolve().parents[2] / "drills", Path.cwd() / "drills"]
    for path in candidates:
        if path.is_dir():
            return path.resolve()
    raise PgRestoreError(
        "no drills folder found",
        checked=", ".join(map(str, candidates)),
        fix="run from a checkout of pytest-pgrestore, or pass --drills DIR",
    )


def _workdir(given: Path | None, repo: Path) -> Path:
    if given:
        return given.absolute()
    default = repo / ".demo"
    fallback = Path(f"/tmp/pgrestore-demo-{os.getuid()}")
    if not _server_can_reach(repo):
        _say(f"the postgres user cannot reach {repo} (a 0700 parent directory?): using {fallback}")
        return fallback
    if len(str(default / _SOCKET)) > 100:  # sun_path holds 107 bytes
        _say(f"{default} is too deep for a unix socket path: using {fallback}")
        return fallback
    return default


def _server_can_reach(path: Path) -> bool:
    """Can the server user (``postgres`` when we are root) search every directory down to ``path``?"""
    if os.geteuid() != 0:
        return True
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:  # no server user at all: SourceCluster says so, with the fix
        return True
    for p in [path, *path.parents]:
        st = p.stat()
        if not (
            st.st_mode & 0o001
            or (st.st_uid == pw.pw_uid and st.st_mode & 0o100)
            or (st.st_gid == pw.pw_gid and st.st_mode & 0o010)
        ):
            return False
    return True


def _prepare(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the postgres user traverses it to its source cluster
    _remove_created(workdir)  # a kept earlier run would otherwise add its backups to this one
    for name in _REPORTS:
        (workdir / name).unlink(missing_ok=True)


def _remove_created(workdir: Path) -> None:
    for name in _CREATED:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _say(text: str) -> None:
    print(f"[demo {datetime.now():%H:%M:%S}] {text}", flush=True)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
