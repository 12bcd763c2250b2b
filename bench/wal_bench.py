"""Stage ``wal``: WAL delivery per segment, ours against the tools' restore_command.

* ours (spool)       the WalSpool fetching the plan's segments, 4 in flight, into a spool dir:
                     wall time ÷ segments;
* ours (one by one)  ``open_wal`` + write, one segment after the other, in process;
* archive-get        ``pgbackrest archive-get SEG PATH``: a process per segment, as a
                     restore_command runs it;
* wal-restore        ``barman-cloud-wal-restore``: the same for barman-cloud.

Every figure is seconds per segment (median over ``--runs`` passes).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from build import log

TOOL_SEGMENTS = 10  # segments per pass through a tool's process-per-segment path


def run(bench) -> None:
    from pytest_pgrestore.formats import get_format
    from pytest_pgrestore.restore._plan import make_plan
    from pytest_pgrestore.settings._target import RestoreTarget
    from pytest_pgrestore.store._s3 import S3Store

    results: dict[str, list[float]] = {}
    for fmt_name, bucket, prefix, selector in (("basebackup", "basebackup", "pg", {}), ("pgbackrest", "pgbr", "repo", {}),
                                               ("barman", "barman", "cloud", {"server": "pg"})):
        fmt = get_format(S3Store(bucket, prefix, env=bench.env), fmt_name, env=bench.env, selector=selector)
        catalog = fmt.catalog()
        plan = make_plan(catalog, RestoreTarget.parse("latest"), timeline="latest", inclusive=True)
        segments = plan.segments if fmt_name != "barman" else _barman_segments(catalog)
        for _ in range(bench.args.runs):
            if fmt_name != "barman":
                results.setdefault(f"{fmt_name}: ours (spool, 4 in flight)", []).append(spool(bench, fmt, plan))
            results.setdefault(f"{fmt_name}: ours (open_wal, one by one)", []).append(
                one_by_one(bench, fmt, plan, segments[:TOOL_SEGMENTS]))
            if fmt_name == "pgbackrest":
                results.setdefault("pgbackrest: archive-get (a process per segment)", []).append(
                    archive_get(bench, segments[:TOOL_SEGMENTS]))
            if fmt_name == "barman":
                results.setdefault("barman: barman-cloud-wal-restore (a process per segment)", []).append(
                    wal_restore(bench, segments[:TOOL_SEGMENTS]))
    med = {}
    for label, values in results.items():
        med[label] = statistics.median(values)
        bench.results["runs"][f"wal {label} (s/segment)"] = [round(v, 4) for v in values]
        log(f"  {label:<58} {med[label] * 1000:8.1f} ms/segment ({', '.join(f'{v * 1000:.0f}' for v in values)})")
    fig = {label: round(v * 1000, 1) for label, v in med.items()}
    fig["archive_get_over_spool"] = round(med["pgbackrest: archive-get (a process per segment)"]
                                          / med["pgbackrest: ours (spool, 4 in flight)"], 1)
    fig["wal_restore_over_ours"] = round(med["barman: barman-cloud-wal-restore (a process per segment)"]
                                         / med["barman: ours (open_wal, one by one)"], 1)
    bench.figure("WAL delivery (ms per segment)", **fig)


def _barman_segments(catalog) -> list[str]:
    from pytest_pgrestore.formats._wal import segment_name

    size = catalog.wal.segment_size
    return [segment_name(tli, segno, size) for tli, segs in catalog.wal.segments.items() for segno in sorted(segs)]


def spool(bench, fmt, plan) -> float:
    from pytest_pgrestore.restore._spool import WalSpool

    d = bench.fresh(bench.restore_root / "spool")
    t = time.monotonic()
    with WalSpool(fmt, plan, d, owner=None) as s:
        s.fetch_all({}, timeout=600)
        assert s.stats.segments == len(plan.segments), s.stats
    seconds = time.monotonic() - t
    shutil.rmtree(d, ignore_errors=True)
    return seconds / len(plan.segments)


def one_by_one(bench, fmt, plan, names: list[str]) -> float:
    keys = plan.segment_keys if plan.segment_keys else {}
    keys = {n: keys.get(n) or fmt.find_wal(n) for n in names}
    d = bench.fresh(bench.restore_root / "seg")
    t = time.monotonic()
    for name, key in keys.items():
        with fmt.open_wal(key) as src, open(d / name, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    seconds = time.monotonic() - t
    shutil.rmtree(d, ignore_errors=True)
    return seconds / len(keys)


def archive_get(bench, names: list[str]) -> float:
    d = bench.fresh(bench.restore_root / "seg")
    t = time.monotonic()
    for name in names:
        bench.pgbackrest.run("archive-get", name, str(d / name))
    seconds = time.monotonic() - t
    shutil.rmtree(d, ignore_errors=True)
    return seconds / len(names)


def wal_restore(bench, names: list[str]) -> float:
    exe = Path(sys.executable).parent / "barman-cloud-wal-restore"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **bench.tool_env}
    d = bench.fresh(bench.restore_root / "seg")
    t = time.monotonic()
    for name in names:
        subprocess.run([str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", bench.s3.https_endpoint,
                        "s3://barman/cloud", "pg", name, str(d / name)], check=True, capture_output=True, env=env)
    seconds = time.monotonic() - t
    shutil.rmtree(d, ignore_errors=True)
    return seconds / len(names)
