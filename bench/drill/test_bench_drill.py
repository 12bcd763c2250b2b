"""The drill bench/run.py runs through pytest (not part of the test suite).

It proves the restore and notes, for the benchmark, what the restored server's own log says
about replay and the peak memory of this process (the pytest process, or an xdist worker).
"""

from __future__ import annotations

import json
import os
import re

SCALE = int(os.environ.get("PGRESTORE_BENCH_SCALE", "0"))


def test_the_restore_reached_latest_and_notes_its_numbers(restored_postgres, restore_result):
    log = (restored_postgres.run_dir / "postgres.log").read_text(errors="replace")
    redo = re.search(r"redo done at \S+ system usage: .*elapsed: ([0-9.]+) s", log)
    status = open("/proc/self/status").read()
    hwm = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))
    r = restore_result
    note = {"redo_seconds": float(redo.group(1)) if redo else None, "phases": r.phases, "rto": r.rto_seconds,
            "wal_prefetch": r.wal_prefetch, "fetch": r.evidence.get("fetch"), "cache": r.evidence.get("cache"),
            "sharing": r.evidence.get("sharing"), "peak_rss_kb": hwm, "pid": os.getpid(),
            "worker": os.environ.get("PYTEST_XDIST_WORKER"), "bytes_written": r.evidence.get("bytes_written")}
    with open(os.environ["PGRESTORE_BENCH_OUT"], "a") as out:
        out.write(json.dumps(note) + "\n")
    assert r.outcome == "REACHED", r.detail


def test_every_account_is_there(restored_db):
    (n,) = restored_db.execute("select count(*) from pgbench_accounts").fetchone()
    assert n == 100000 * SCALE
