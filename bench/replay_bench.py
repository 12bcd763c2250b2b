"""Stages ``replay``, ``rss``, ``cache`` and ``xdist``: whole restores through pytest, and replay
of the same WAL delivered three ways.

The same base backup (the basebackup format's) and the same WAL (from its start to the end of
the pgbench run) are replayed, in rounds:

* floor  — PostgreSQL replays the WAL already in ``pg_wal``: archive recovery as ours (recovery.signal,
           the same settings) with ``restore_command = /bin/false`` ("not archived", so pg_wal is read);
* crash  — the same WAL in ``pg_wal`` without recovery.signal (crash recovery from backup_label): for
           reference, PostgreSQL's own cost of archive recovery shows as floor − crash;
* ours   — a whole drill: ``pytest bench/drill --restore-source=s3://basebackup/pg``: fetch, our
           spool, replay, verdict; the drill reads the server log and notes ``/proc`` peak RSS;
* naive  — ``restore_command = pgbackrest archive-get %f %p``: a process per segment.

Replay time is what the server log says (``redo done at … elapsed``), for all three alike, with
the same server settings (ours, from ``recover.write_config``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from build import log

HERE = Path(__file__).resolve().parent


def run(bench) -> None:
    out: dict[str, list] = {"floor": [], "ours": [], "naive": [], "crash": []}
    notes: list[dict] = []
    for _ in range(bench.args.runs):
        out["floor"].append(replay_local(bench, mode="floor"))
        note = pytest_drill(bench)
        notes.append(note)
        out["ours"].append(note["redo_seconds"])
        out["naive"].append(replay_local(bench, mode="naive"))
        out["crash"].append(replay_local(bench, mode="crash"))
    for k, v in out.items():
        bench.results["runs"][f"replay {k} (redo seconds)"] = v
        log(f"  replay {k:<52} {statistics.median(v):8.3f} s  ({', '.join(f'{x:.2f}' for x in v)})")
    med = {k: statistics.median(v) for k, v in out.items()}
    waited = [n["wal_prefetch"]["replay_waited_seconds"] for n in notes]
    bench.figure("replay", floor_seconds=round(med["floor"], 3), ours_seconds=round(med["ours"], 3),
                 naive_seconds=round(med["naive"], 3), crash_recovery_seconds=round(med["crash"], 3),
                 ours_over_floor=round(med["ours"] / med["floor"], 3),
                 ours_over_floor_paired=round(statistics.median(
                     o / f for o, f in zip(out["ours"], out["floor"], strict=True)), 3),
                 naive_over_floor=round(med["naive"] / med["floor"], 3),
                 replay_waited_seconds=statistics.median(waited), segments=notes[0]["wal_prefetch"]["segments"],
                 wal_bytes=notes[0]["wal_prefetch"]["bytes"])
    phases = {k: statistics.median(n["phases"][k] for n in notes) for k in notes[0]["phases"]}
    bench.figure("drill (pytest, whole restore)", rto_seconds=statistics.median(n["rto"] for n in notes),
                 phases=phases, fetch=notes[-1]["fetch"],
                 pytest_peak_rss_mb=round(max(n["peak_rss_kb"] for n in notes) / 1024, 1))


def run_rss(bench) -> None:
    """One drill with every process it starts sampled: peak RSS of each non-server process."""
    sampler = TreeRSS()
    note = pytest_drill(bench, sampler=sampler)
    peaks = {k: round(v / 1024, 1) for k, v in sorted(sampler.peak.items(), key=lambda kv: -kv[1])}
    peaks["pytest (VmHWM, read by the drill)"] = round(note["peak_rss_kb"] / 1024, 1)
    bench.figure("peak RSS (MB)", **peaks, sampled_every_seconds=sampler.every,
                 restored_bytes=note["bytes_written"])
    log(f"  peak RSS MB: {peaks}")


def run_cache(bench) -> None:
    """The same drill twice with --restore-cache: a cold run fills the cache, a warm one reads it."""
    cache = bench.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cold = pytest_drill(bench, extra=[f"--restore-cache={cache}"])
    warm = pytest_drill(bench, extra=[f"--restore-cache={cache}"])
    shutil.rmtree(cache, ignore_errors=True)
    bench.figure("cache", cold_fetch_seconds=cold["phases"]["fetch"], warm_fetch_seconds=warm["phases"]["fetch"],
                 cold_bytes_network=cold["fetch"]["bytes_network"], warm_bytes_network=warm["fetch"]["bytes_network"],
                 warm_bytes_from_cache=warm["fetch"]["bytes_cache"], warm_served_from_cache=warm["cache"]["served_from_cache"])
    log(f"  cache: fetch {cold['phases']['fetch']:.2f} s cold, {warm['phases']['fetch']:.2f} s warm")


def run_xdist(bench) -> None:
    """``pytest -n 4``: one restore for every worker (the evidence counts them)."""
    evidence = bench.work / "xdist-evidence.json"
    pytest_drill(bench, extra=["-n", "4", f"--restore-report={evidence}"], expect_note=False)
    (record,) = json.loads(evidence.read_text())["restores"]
    bench.figure("pytest -n 4", restores=record["sharing"]["restores"], workers=record["sharing"]["workers"],
                 rto_seconds=record["rto"]["seconds"], drills=len(record["drills"]))
    log(f"  pytest -n 4: {record['sharing']}")


# -- a drill through pytest ------------------------------------------------------------------------
def pytest_drill(bench, *, sampler=None, extra=(), expect_note=True) -> dict:
    notes = bench.work / "drill-notes.jsonl"
    notes.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGRESTORE_", "AWS_", "PYTEST_"))}
    env.update(bench.env, PGRESTORE_BENCH_OUT=str(notes), PGRESTORE_BENCH_SCALE=str(bench.state["scale"]))
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(HERE / "drill"),
            "--restore-source=s3://basebackup/pg", "--restore-format=basebackup",
            f"--restore-fetch-concurrency={bench.args.concurrency}", f"--restore-workdir={bench.restore_root / 'runs'}",
            "--restore-progress=off", *extra]
    proc = subprocess.Popen(argv, cwd=HERE.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if sampler is not None:
        sampler.start(proc.pid)
    out = proc.communicate(timeout=1800)[0].decode(errors="replace")
    if sampler is not None:
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the bench drill failed ({proc.returncode}):\n{out[-4000:]}")
    if not expect_note:
        return {}
    return json.loads(notes.read_text().splitlines()[-1])


class TreeRSS:
    """Peak RSS of every process under one pid, by executable, PostgreSQL's server excluded."""

    every = 0.05

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()

    def start(self, pid: int) -> None:
        self.root = pid
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for pid in self._tree():
                try:
                    exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if exe == "postgres":
                    continue
                if exe.startswith("python"):
                    exe = "pytest" if pid == self.root else "python (other)"
                m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
                if m:
                    self.peak[exe] = max(self.peak.get(exe, 0), int(m.group(1)))

    def _tree(self) -> list[int]:
        parent: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
        tree, frontier = [self.root], [self.root]
        while frontier:
            frontier = [p for p, pp in parent.items() if pp in frontier]
            tree += frontier
        return tree


# -- replay with the WAL already local, or through a process per segment ---------------------------
def replay_local(bench, *, mode: str) -> float:
    """Materialize the basebackup (untimed), deliver its WAL as ``mode`` says, and return the
    replay time the server log reports."""
    from tool_support import server_ids

    from pytest_pgrestore.formats._basebackup import BaseBackupFormat
    from pytest_pgrestore.restore._plan import make_plan
    from pytest_pgrestore.restore._recover import control_data, quarantine, server_settings, write_config
    from pytest_pgrestore.restore._rundir import free_port
    from pytest_pgrestore.runtimes._binaries import find_binaries
    from pytest_pgrestore.settings._target import RestoreTarget
    from pytest_pgrestore.store._s3 import S3Store

    owner = server_ids()
    run = bench.fresh(bench.restore_root / f"replay-{mode}")
    fmt = BaseBackupFormat(S3Store("basebackup", "pg", env=bench.env))
    catalog = fmt.catalog()
    plan = make_plan(catalog, RestoreTarget.parse("latest"), timeline="latest", inclusive=True)
    pgdata = run / "pgdata"
    fmt.materialize(plan.backup, pgdata, run, owner=owner)
    bins = find_binaries(15, server_uid=owner[0], cache_dir=bench.work / "bin")
    control = control_data(bins, pgdata)
    quarantine(pgdata, _mkdir(run / "evidence"))
    if mode in ("floor", "crash"):
        for name in plan.segments:
            lz4 = bench.work / "bb-repo" / "wal" / f"{name}.lz4"
            subprocess.run(f"lz4 -q -dc < {lz4} > {pgdata / 'pg_wal' / name}", shell=True, check=True)
        if mode == "crash":
            (pgdata / "recovery.signal").unlink()  # crash recovery from backup_label: pg_wal only
        command = "" if mode == "crash" else "/bin/false"  # archive recovery: "not in the archive", read pg_wal
    else:
        command = (f"pgbackrest --config={bench.pgbackrest.conf} --stanza=main --pg1-path={pgdata} "
                   "archive-get %f \"%p\"")
    sock = _mkdir(run / "sock")
    settings = server_settings(control, major=15, port=free_port(), socket_dir=sock, restore_command=command,
                               recovery={"recovery_target_timeline": "latest"} if mode != "crash" else {})
    conf = write_config(run, settings)
    _chown(run, owner)
    logfile = run / "postgres.log"
    argv = [str(bins.tool("postgres")), "-D", str(pgdata), "-c", f"config_file={conf}"]
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=run, user=owner[0],
                                group=owner[1], extra_groups=[], env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    try:
        elapsed = _wait_redo(logfile, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        shutil.rmtree(run, ignore_errors=True)
    return elapsed


def _wait_redo(logfile: Path, proc, timeout: float = 1200) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = logfile.read_text(errors="replace")
        if "ready to accept connections" in text:
            m = re.search(r"redo done at \S+ system usage: .*elapsed: ([0-9.]+) s", text)
            if not m:
                raise RuntimeError(f"no 'redo done' line in {logfile}:\n{text[-3000:]}")
            return float(m.group(1))
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"replay did not end within {timeout} s")


def _mkdir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _chown(root: Path, owner) -> None:
    for dirpath, dirs, files in os.walk(root):
        os.chown(dirpath, *owner)
        for name in dirs + files:
            os.lchown(os.path.join(dirpath, name), *owner)
