"""Build the benchmark's data once: a >= 1 GB PostgreSQL 15 database backed up four ways.

One source cluster (``pgbench -i -s SCALE``) whose ``archive_command`` writes every WAL segment
twice — into the basebackup layout (lz4, the demo's copy script) and through the real
``pgbackrest archive-push`` — then, on the same data:

* WAL-G layout   ``pg_basebackup -Ft`` rewritten by ``tests/walg_writer.py`` (lz4), in ``s3://walg/pg``
* pgBackRest     ``pgbackrest backup --type=full`` (lz4) into ``s3://pgbr/repo`` over TLS
* barman-cloud   ``barman-cloud-backup --lz4`` into ``s3://barman/cloud`` (server ``pg``)
* basebackup     ``pg_basebackup -Ft --compress=client-lz4`` in ``s3://basebackup/pg``, taken last

then a ``pgbench`` run writes the WAL stream every replay measurement replays (from the
basebackup's start).  Every format uses lz4: the same codec for everyone.

The work dir keeps the source's files and SeaweedFS's data dir; ``state.json`` says what was
built, so a second ``bench/run.py --reuse`` skips all of this.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
sys.path.insert(0, str(HERE.parent / "tests"))

from tool_support import BarmanCloud, PgBackRest, ToolSource, run_as_server  # noqa: E402

from pytest_pgrestore.demo._source import SourceCluster  # noqa: E402

STATE = "state.json"
BUCKETS = ("basebackup", "walg", "pgbr", "barman")


class BenchSource(ToolSource):
    """A tool source that also keeps the basebackup layout's repo (the demo's archive script)."""

    def __init__(self, workdir: Path, *, repo: Path, **kwargs) -> None:
        SourceCluster.__init__(self, workdir, repo=repo, major=15, wal_compression="lz4", **kwargs)
        self.archive_command = ""

    wait_archived = SourceCluster.wait_archived  # the basebackup layout's copy, not pg_stat_archiver



def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pgbackrest_tool(work: Path, s3) -> PgBackRest:
    return PgBackRest(work / "pgbr-tool", repo=PgBackRest.s3_options(
        1, endpoint_port=s3.ports["s3_https"], bucket="pgbr", path="/repo", key=s3.admin.access_key,
        secret=s3.admin.secret_key), compress_type="lz4", extra={"process-max": "2"})


def barman_tool(work: Path, s3, cert: Path) -> BarmanCloud:
    return BarmanCloud(work / "barman-tool", endpoint=s3.https_endpoint, ca_bundle=cert, bucket="barman",
                       path="cloud", server="pg", key=s3.admin.access_key, secret=s3.admin.secret_key,
                       wal_compression=None)


def build(work: Path, s3, cert: Path, *, scale: int, pgbench_seconds: int) -> dict:
    """Everything above; returns the state (also written to ``work/state.json``)."""
    for bucket in BUCKETS:
        s3.create_bucket(bucket)
    tool = pgbackrest_tool(work, s3)
    src = BenchSource(work / "src", repo=work / "bb-repo")
    src.archive_command = (f"/bin/sh {shlex.quote(str(src.workdir / 'archive_wal.sh'))} %p %f && "
                           f"pgbackrest --config={tool.conf} --stanza={tool.stanza} archive-push %p")
    state: dict = {"scale": scale, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    src.init()
    with (src.pgdata / "postgresql.conf").open("a") as conf:  # no checkpoint storm while loading
        conf.write("max_wal_size = '8GB'\ncheckpoint_timeout = '30min'\nshared_buffers = '256MB'\n")
    tool.write_config(src)
    try:
        src.start()
        tool.run("stanza-create")
        tool.run("check")
        t = time.monotonic()
        pgbench(src, "-i", "-q", "-s", str(scale))
        (size,) = src._one("select pg_database_size('postgres')")
        state["db_bytes"] = int(size)
        log(f"pgbench -i -s {scale}: database {size / 1e9:.2f} GB in {time.monotonic() - t:.0f} s")
        src.checkpoint()
        state["walg"] = walg_backup(work, src, s3)
        t = time.monotonic()
        state["pgbackrest"] = {"label": tool.backup("full"), "url": "s3://pgbr/repo"}
        log(f"pgbackrest backup: {state['pgbackrest']['label']} in {time.monotonic() - t:.0f} s")
        state["barman"] = barman_backup(work, src, s3, cert)
        t = time.monotonic()
        bb = src.backup(compress="lz4")
        state["basebackup"] = {"name": bb.name, "url": "s3://basebackup/pg", "start_lsn": bb.start_lsn,
                               "stop_wal": bb.stop_wal}
        log(f"pg_basebackup -Ft lz4: {bb.name} in {time.monotonic() - t:.0f} s")
        t = time.monotonic()
        first = src.current_segment()
        pgbench(src, "-c", "2", "-j", "2", "-T", str(pgbench_seconds), "-n")
        last = src.switch_wal()
        ToolSource.wait_archived(src, last, timeout=300)  # archive-push has its copy too
        state["wal"] = {"from_segment": bb.stop_wal, "pgbench_first": first, "last": last}
        log(f"pgbench run {pgbench_seconds}s: WAL {first} .. {last} in {time.monotonic() - t:.0f} s")
    finally:
        src.close()
    t = time.monotonic()
    shutil.rmtree(work / "bb-repo" / ".incoming", ignore_errors=True)
    s3.upload_dir(work / "bb-repo", "basebackup", "pg")
    s3.upload_dir(work / "walg-repo", "walg", "pg")
    log(f"uploaded basebackup and WAL-G layouts in {time.monotonic() - t:.0f} s")
    state["stored"] = stored_sizes(s3, state)
    (work / STATE).write_text(json.dumps(state, indent=1) + "\n")
    return state


def pgbench(src, *args: str) -> None:
    run_as_server([str(src.bindir / "pgbench"), *args, "-h", str(src.workdir / "sock"), "-p", "5432", "-U",
                   "postgres", "postgres"], timeout=3600)


def walg_backup(work: Path, src, s3) -> dict:
    """An uncompressed pg_basebackup, rewritten in WAL-G's layout (lz4) with its own WAL."""
    from walg_writer import WalgWriter

    t = time.monotonic()
    info = src.backup(name="walg-src")
    staged = work / "walg-src"
    shutil.rmtree(staged, ignore_errors=True)
    shutil.move(str(info.path), staged)  # not part of the basebackup layout
    history = _fields(_lz4_cat(info.history_file))
    wal_plain = work / "walg-wal"
    shutil.rmtree(wal_plain, ignore_errors=True)
    wal_plain.mkdir()
    first = info.history_file.name[:24]
    for seg in _segments_between(first, info.stop_wal):
        (wal_plain / seg).write_bytes(_lz4_cat(src.wal_dir / f"{seg}.lz4"))
    writer = WalgWriter(work / "walg-repo", method="lz4")
    writer.push_wal(wal_plain)
    pushed = writer.push_backup(staged, history=history)
    shutil.rmtree(staged)
    log(f"WAL-G layout: {pushed.name} in {time.monotonic() - t:.0f} s")
    return {"name": pushed.name, "url": "s3://walg/pg"}


def barman_backup(work: Path, src, s3, cert: Path) -> dict:
    """barman-cloud-backup --lz4, then barman-cloud-wal-archive --lz4 for the backup's own WAL."""
    tool = barman_tool(work, s3, cert)
    bindir = Path(sys.executable).parent
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **tool.env}
    t = time.monotonic()
    first = src.current_segment()
    subprocess.run([str(bindir / "barman-cloud-backup"), "--cloud-provider", "aws-s3", "--endpoint-url",
                    tool.endpoint, "-h", str(src.workdir / "sock"), "-p", "5432", "-U", "postgres",
                    "--immediate-checkpoint", "--lz4", "-J", "2", tool.url, tool.server],
                   check=True, capture_output=True, env=env, timeout=1800)
    last = src.switch_wal()
    plain = work / "barman-wal"
    shutil.rmtree(plain, ignore_errors=True)
    plain.mkdir()
    for seg in _segments_between(first, last):
        (plain / seg).write_bytes(_lz4_cat(src.wal_dir / f"{seg}.lz4"))
        subprocess.run([str(bindir / "barman-cloud-wal-archive"), "--cloud-provider", "aws-s3", "--endpoint-url",
                        tool.endpoint, "--lz4", tool.url, tool.server, str(plain / seg)],
                       check=True, capture_output=True, env=env, timeout=300)
    (backup_id,) = tool.backup_ids()
    log(f"barman-cloud-backup --lz4: {backup_id} in {time.monotonic() - t:.0f} s")
    return {"backup_id": backup_id, "url": "s3://barman/cloud?server=pg", "wal": [first, last]}


def stored_sizes(s3, state: dict) -> dict:
    client = s3.admin_client()
    out = {}
    try:
        for bucket in BUCKETS:
            total = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                total += sum(o["Size"] for o in page.get("Contents", ()))
            out[bucket] = total
    finally:
        client.close()
    return out


def _lz4_cat(path: Path) -> bytes:
    return subprocess.run(["lz4", "-q", "-dc", str(path)], check=True, capture_output=True).stdout


def _fields(text: bytes) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in text.decode().splitlines() if ": " in line)


def _segments_between(first: str, last: str) -> list[str]:
    """Segment names from ``first`` to ``last`` (one timeline, 16 MB segments)."""
    tli, a, b = first[:8], int(first[8:16], 16) * 256 + int(first[16:], 16), \
        int(last[8:16], 16) * 256 + int(last[16:], 16)
    return [f"{tli}{n // 256:08X}{n % 256:08X}" for n in range(a, b + 1)]


def reuse(work: Path) -> dict | None:
    path = work / STATE
    return json.loads(path.read_text()) if path.exists() else None


def pgbackrest_config(work: Path, s3) -> PgBackRest:
    """The pgBackRest tool with a config for this SeaweedFS start (its keys change every start)."""
    tool = pgbackrest_tool(work, s3)
    src = BenchSource(work / "src", repo=work / "bb-repo")
    tool.write_config(src)
    return tool
