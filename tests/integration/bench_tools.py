"""Native readers vs the real tools, measured on this machine (not collected by pytest).

    python tests/integration/bench_tools.py [--scale 15] [--runs 3]

A PostgreSQL 15 source with ``pgbench -i -s SCALE`` is backed up with pgBackRest (posix repo and
an S3 repo over TLS, zst) and barman-cloud (S3, gzip and none).  Then, for the same backup:

* PGDATA: our native materialize vs ``pgbackrest restore`` (process-max 1 and 4) and
  ``barman-cloud-restore``;
* WAL: one segment through ``barman-cloud-wal-restore`` / ``pgbackrest archive-get`` (a process
  per segment, as a restore_command would) vs our ``open_wal`` from the same store.

Prints one line per measurement (median of ``--runs``) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tool_support import (  # noqa: E402
    BarmanCloud,
    PgBackRest,
    barman_source,
    chown_tree,
    pgbackrest_source,
    run_as_server,
    self_signed_cert,
)

from pytest_pgrestore.demo._seaweed import SeaweedS3  # noqa: E402
from pytest_pgrestore.formats._barman import BarmanFormat  # noqa: E402
from pytest_pgrestore.formats._pgbackrest import PgBackRestFormat  # noqa: E402
from pytest_pgrestore.store._local import LocalStore  # noqa: E402
from pytest_pgrestore.store._s3 import S3Store  # noqa: E402

RESULTS: dict[str, float] = {}


def timed(label: str, fn, runs: int, setup=None) -> float:
    times = []
    for _ in range(runs):
        if setup:
            setup()
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    RESULTS[label] = round(statistics.median(times), 3)
    print(f"{label:<60} {RESULTS[label]:8.3f} s   (runs: {', '.join(f'{x:.2f}' for x in times)})", flush=True)
    return RESULTS[label]


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    chown_tree(path)


def pgbench(src, scale: int) -> None:
    bindir = src.bindir
    run_as_server([str(bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-h", str(src.workdir / "sock"),
                   "-p", "5432", "-U", "postgres", "postgres"], timeout=900)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pgr-bench-", dir="/tmp"))
    root.chmod(0o755)
    try:
        cert, key = self_signed_cert(root / "tls")
        with SeaweedS3(root / "s3", tls=(cert, key)) as s3:
            for bucket in ("pgbr", "barman"):
                s3.create_bucket(bucket)
            env = {**s3.env(readonly=True), "AWS_ENDPOINT_URL": s3.https_endpoint, "AWS_CA_BUNDLE": str(cert)}
            bench_pgbackrest(root, s3, env, args)
            bench_barman(root, s3, env, cert, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(RESULTS, indent=1))
    return 0


def bench_pgbackrest(root: Path, s3, env, args) -> None:
    """One stanza, two repos: repo1 posix, repo2 S3 over TLS; archive-push writes WAL to both."""
    repo = {"repo1-path": str(root / "pgbr-repo"), **PgBackRest.s3_options(
        2, endpoint_port=s3.ports["s3_https"], bucket="pgbr", path="/repo", key=s3.admin.access_key,
        secret=s3.admin.secret_key)}
    tool = PgBackRest(root / "pgbr-tool", repo=repo, compress_type="zst")
    with pgbackrest_source(root / "src-pgbr", tool) as src:
        pgbench(src, args.scale)
        labels = {1: tool.backup("full", "--repo=1"), 2: tool.backup("full", "--repo=2")}
        for _ in range(4):
            src.commit_rows(1)
            src.switch_wal()
    size = sum(p.stat().st_size for p in (root / "pgbr-repo/backup/main" / labels[1]).rglob("*") if p.is_file())
    print(f"pgBackRest full backup, pgbench -s {args.scale}: {size / 1e6:.0f} MB stored (zst)")
    dest = root / "restore"
    for n, name, store in ((1, "posix", LocalStore(root / "pgbr-repo")),
                           (2, "s3-tls", S3Store("pgbr", "repo", env=env))):
        fmt = PgBackRestFormat(store)
        catalog = fmt.catalog()
        backup = catalog.backup(labels[n])
        timed(f"pgbackrest {name}: native materialize (8 threads)",
              lambda fmt=fmt, backup=backup: fmt.materialize(backup, dest / "pgdata", dest, owner=None),
              args.runs, setup=lambda: fresh(dest))
        for pmax in (1, 4):
            timed(f"pgbackrest {name}: pgbackrest restore --process-max={pmax}",
                  lambda n=n, pmax=pmax: tool.run("restore", f"--repo={n}", f"--set={labels[n]}",
                                                  f"--pg1-path={dest}", "--type=none", f"--process-max={pmax}"),
                  args.runs, setup=lambda: fresh(dest))
        segs = [s for segs in catalog.wal.segments.values() for s in segs.values()]
        seg = segs[-2]
        seg_name = seg.key.rsplit("/", 1)[1][:24]
        timed(f"pgbackrest {name}: one WAL segment via archive-get (a process)",
              lambda n=n, seg_name=seg_name: tool.run("archive-get", f"--repo={n}", seg_name, str(dest / "seg")),
              args.runs, setup=lambda: fresh(dest))
        timed(f"pgbackrest {name}: one WAL segment via open_wal (in process, SHA-1 checked)",
              lambda fmt=fmt, seg=seg: fmt.open_wal(seg.key).read(), args.runs)
    shutil.rmtree(dest, ignore_errors=True)


def bench_barman(root: Path, s3, env, cert, args) -> None:
    tool = BarmanCloud(root / "barman-tool", endpoint=s3.https_endpoint, ca_bundle=cert, bucket="barman",
                       path="cloud", server="pg", key=s3.admin.access_key, secret=s3.admin.secret_key)
    with barman_source(root / "src-barman", tool) as src:
        pgbench(src, args.scale)
        ids = {"gzip": tool.backup(src, compression="gzip")}
        time.sleep(1.1)
        ids["none"] = tool.backup(src)
        src.switch_wal()
    fmt = BarmanFormat(S3Store("barman", "cloud", env=env))
    catalog = fmt.catalog()
    dest = root / "restore"
    exe = Path(sys.executable).parent / "barman-cloud-restore"
    wal_exe = Path(sys.executable).parent / "barman-cloud-wal-restore"
    benv = {"PATH": os.environ.get("PATH", ""), **tool.env}
    for comp, bid in ids.items():
        backup = catalog.backup(bid)
        timed(f"barman {comp}: native materialize", lambda backup=backup: fmt.materialize(
            backup, dest / "pgdata", dest, owner=None), args.runs, setup=lambda: fresh(dest))
        timed(f"barman {comp}: barman-cloud-restore", lambda bid=bid: subprocess.run(
            [str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", s3.https_endpoint, tool.url, "pg", bid,
             str(dest / "pgdata")], env=benv, check=True, capture_output=True), args.runs, setup=lambda: fresh(dest))
    seg = sorted(n for segs in catalog.wal.segments.values() for n in segs)[1]
    wal = next(iter(catalog.wal.segments.values()))[seg]
    name = wal.key.rsplit("/", 1)[1].split(".")[0]
    timed("barman: one WAL segment via barman-cloud-wal-restore (process)", lambda: subprocess.run(
        [str(wal_exe), "--cloud-provider", "aws-s3", "--endpoint-url", s3.https_endpoint, tool.url, "pg", name,
         str(dest / "seg")], env=benv, check=True, capture_output=True), args.runs, setup=lambda: fresh(dest))
    timed("barman: one WAL segment via open_wal (in process)", lambda: fmt.open_wal(wal.key).read(), args.runs)
    shutil.rmtree(dest, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
