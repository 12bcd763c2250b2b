"""Stage ``paths``: the hand-written speed paths against the library path they replace (issue 17).

Three paths, each shipped (A) against the library (B), in one session, rounds interleaved
(A B A B …: one run of every contender per round), a fresh destination, ``os.sync()`` and the
harness's memory settling before every run, as in ``fetch_bench.rounds``:

* **lean GET** (``store/s3_lean.py``): the pgBackRest format's ``materialize`` through the
  fetch layer (806 small objects: the per-request cost) and the basebackup format's, with the
  lean GET on (as shipped) and off: every GET through the botocore client.  "Off" patches the
  format's own ``S3Store`` instance (``store._lean`` answers with a getter that always says
  "ask the client"), for that run only; the package is not edited.
* **lz4 large-step reader** (``Lz4Reader``, pgBackRest files over 4 MiB): the pgBackRest
  format's ``materialize`` as shipped (``Lz4Reader`` over ``lz4.frame.LZ4FrameDecompressor``,
  lz4 verifying each frame's content checksum) against ``lz4.frame.LZ4FrameFile``:
  ``open_codec`` as the pgBackRest format imported it is patched for the run to return
  ``LZ4FrameFile`` for lz4.  (The content-checksum skip this row first measured did not earn
  its place, 1.06× / 1.07× inside a 42–89 % spread, and was replaced by the library path:
  lz4 verifies its own checksum everywhere; see README.md.)
* **tar writer thread** (``formats/tarstream.py``): the basebackup format's base tar, read
  from the store (lean GET on, as shipped) through the same decompressing reader
  (``open_decompressed``: ``Lz4Reader``), extracted by ``extract_tar`` (as shipped) or by
  ``tarfile.open(fileobj=…, mode="r|", bufsize=4 << 20).extractall(dest, filter="data")``.

Before the timed rounds one untimed round runs every contender once and checks it did what its
label says: the GETs each lean contender sent by each route, how many lz4 streams each
contender decoded through ``Lz4Reader``, and that both tar contenders wrote the same files with
the same sizes.

Per path: each contender's median, the paired ratio B ÷ A round by round (above 1: the shipped
path is faster) with its median and range, and each contender's spread between rounds
((max − min) ÷ median).  Verdict: "keeps its place" when the paired median ratio exceeds
1 + the larger of the two spreads, else "does not earn its place".  Written to
``results/paths.json`` and ``results/paths.md`` (and into the session's results).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

#: (path, where, shipped contender, library contenders: the first decides the verdict, whether this
#: row decides the path's verdict: the basebackup row of the lean GET is a control, 2 large objects
#: where the per-request cost the lean GET saves cannot show)
PATHS = (
    ("lean GET", "pgBackRest format materialize (806 small objects + 2 large)",
     "pgbackrest: lean GET on (shipped)", ("pgbackrest: lean GET off (botocore get_object)",), True),
    ("lean GET", "basebackup format materialize (2 tar objects; control)",
     "basebackup: lean GET on (shipped)", ("basebackup: lean GET off (botocore get_object)",), False),
    ("lz4 large-step reader", "pgBackRest format materialize (files > 4 MiB decoded as streams)",
     "pgbackrest: Lz4Reader, lz4 verifies the checksum (shipped)", ("pgbackrest: lz4.frame.LZ4FrameFile",), True),
    ("tar writer thread", "basebackup format base tar, from the store through Lz4Reader",
     "basebackup: extract_tar, writer thread (shipped)",
     ("basebackup: tarfile r| bufsize 4 MiB, extractall(filter='data')",), True),
)


def run(bench) -> None:
    from build import log

    c = bench.args.concurrency
    pg = _format(bench, "pgbackrest")
    bb = _format(bench, "basebackup")
    base_key = next(k for f, k in bb.backup.details["tars"].items() if f.startswith("base."))
    contenders = {
        "pgbackrest: lean GET on (shipped)": lambda d: _materialize(pg, d, c),
        "pgbackrest: lean GET off (botocore get_object)": lambda d: _lean_off(pg, lambda: _materialize(pg, d, c)),
        "basebackup: lean GET on (shipped)": lambda d: _materialize(bb, d, c),
        "basebackup: lean GET off (botocore get_object)": lambda d: _lean_off(bb, lambda: _materialize(bb, d, c)),
        "pgbackrest: Lz4Reader, lz4 verifies the checksum (shipped)": lambda d: _materialize(pg, d, c),
        "pgbackrest: lz4.frame.LZ4FrameFile": lambda d: _lz4_frame_file(lambda: _materialize(pg, d, c)),
        "basebackup: extract_tar, writer thread (shipped)": lambda d: _extract_ours(bb.store, base_key, d),
        "basebackup: tarfile r| bufsize 4 MiB, extractall(filter='data')":
            lambda d: _extract_tarfile(bb.store, base_key, d),
    }
    dest = bench.restore_root / "paths-dest"
    settle = int(bench.state.get("db_bytes", 1 << 30) * 1.25)
    checks = _check_round(bench, pg, bb, contenders, dest, settle, base_key)
    for line in checks["log"]:
        log(f"  check: {line}")
    times: dict[str, list[float]] = {label: [] for label in contenders}
    cpu: dict[str, list[float]] = {label: [] for label in contenders}
    loads = []
    for i in range(bench.args.runs):
        loads.append(round(os.getloadavg()[0], 2))
        for label, fn in contenders.items():
            wall, used = _one_run(bench, fn, dest, settle)
            times[label].append(wall)
            cpu[label].append(used)
        log(f"  round {i + 1}/{bench.args.runs} done (load average {loads[-1]:.1f})")
    shutil.rmtree(dest, ignore_errors=True)
    for label, values in times.items():
        bench.results["runs"][label] = [round(v, 3) for v in values]
        log(f"  {label:<66} {statistics.median(values):8.3f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    figures = []
    for path, where, shipped, library, decides in PATHS:
        fig = _figure(path, where, shipped, library, times, cpu, decides=decides)
        figures.append(fig)
        bench.figure(f"paths {path}: {where}", **fig)
        log(f"  {path} ({where}): {fig['verdict']} — {_ratio_text(fig['library'][0])}")
    out = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "runs": bench.args.runs,
           "concurrency": c, "load_average_per_round": loads, "checks": checks, "paths": figures,
           "seconds": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
           "cpu_seconds": {k: [round(v, 3) for v in vs] for k, vs in cpu.items()},
           "restores_write_into": bench.restore_fs}
    bench.args.out.mkdir(parents=True, exist_ok=True)
    (bench.args.out / "paths.json").write_text(json.dumps(out, indent=1) + "\n")
    (bench.args.out / "paths.md").write_text(markdown(out))
    log(f"  paths: {bench.args.out / 'paths.json'}, {bench.args.out / 'paths.md'}")


# -- the contenders -------------------------------------------------------------------------------
def _format(bench, fmt: str) -> SimpleNamespace:
    from pytest_pgrestore.formats import get_format
    from pytest_pgrestore.store._s3 import S3Store

    url = bench.state[fmt]["url"]
    bucket, _, rest = url[len("s3://"):].partition("/")
    prefix, _, query = rest.partition("?")
    store = S3Store(bucket, prefix, env=bench.env)
    fmt_obj = get_format(store, fmt, env=bench.env, selector=dict([query.split("=")]) if query else {})
    backup = fmt_obj.catalog().backups[-1]
    return SimpleNamespace(fmt=fmt_obj, backup=backup, store=fmt_obj.store)  # the store it reads (maybe a parent)


def _materialize(f: SimpleNamespace, dest: Path, c: int) -> None:
    from fetch_bench import ours

    ours(f.fmt, f.backup, dest, c)


class _NoLean:
    """What ``S3Store._lean()`` returns for the "off" contender: every GET goes to the client."""

    def get(self, key, extra):
        return None

    def close(self) -> None:
        pass


def _lean_off(f: SimpleNamespace, fn) -> None:
    store = f.store
    store._lean = _NoLean  # an instance attribute: this store only, for this run only
    try:
        fn()
    finally:
        del store._lean


def _lz4_frame_file(fn) -> None:
    """``fn()`` with the pgBackRest format decoding lz4 streams through ``lz4.frame.LZ4FrameFile``."""
    import pytest_pgrestore.formats._pgbackrest as mod

    shipped = mod.open_codec

    def frame_file(raw, codec, *, label):
        if codec == "lz4":
            import lz4.frame

            return _Closing(lz4.frame.LZ4FrameFile(raw, mode="rb"), raw)
        return shipped(raw, codec, label=label)

    mod.open_codec = frame_file
    try:
        fn()
    finally:
        mod.open_codec = shipped


class _Closing:
    """``LZ4FrameFile`` over a file object does not close it: close the response too, as the
    shipped reader does."""

    def __init__(self, stream, raw) -> None:
        self.stream, self.raw = stream, raw
        self.read = stream.read

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stream.close()
        finally:
            self.raw.close()


def _extract_ours(store, key: str, dest: Path) -> None:
    from pytest_pgrestore.formats._codecs import extract_tar, open_decompressed

    pgdata = dest / "pgdata"
    pgdata.mkdir(mode=0o700)
    with store.open(key) as raw, open_decompressed(raw, key) as stream:
        extract_tar(stream, pgdata, label=key)


def _extract_tarfile(store, key: str, dest: Path) -> None:
    from pytest_pgrestore.formats._codecs import open_decompressed

    pgdata = dest / "pgdata"
    pgdata.mkdir(mode=0o700)
    with store.open(key) as raw, open_decompressed(raw, key) as stream:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=4 << 20) as tar:
            tar.extractall(pgdata, filter="data")
        while stream.read(1 << 20):  # to EOF, as extract_tar reads it: the frame's end is checked there
            pass


# -- rounds ---------------------------------------------------------------------------------------
def _one_run(bench, fn, dest: Path, settle: int) -> tuple[float, float]:
    bench.fresh(dest)
    os.sync()  # the previous run's dirty pages are not the next one's cost
    bench.settle_memory(settle)
    c0, t = os.times(), time.monotonic()
    fn(dest)
    wall, c1 = time.monotonic() - t, os.times()
    return wall, (c1.user - c0.user) + (c1.system - c0.system)


def _check_round(bench, pg, bb, contenders: dict, dest: Path, settle: int, base_key: str) -> dict:
    """One untimed run of each contender (also the warm-up), checking each does what its label says."""
    import pytest_pgrestore.formats._codecs as codecs

    out: dict = {"log": []}
    counts: dict[str, dict[str, int]] = {}
    files: dict[str, dict[str, int]] = {}
    flag = _content_checksum_flag(pg)
    out["pgbackrest_largest_file_has_content_checksum"] = flag
    out["log"].append(f"the pgBackRest backup's largest file: lz4 frame content-checksum flag {'set' if flag else 'NOT set'}")
    reader_init = codecs.Lz4Reader.__init__
    for label, fn in contenders.items():
        n = {"client get_object": 0, "lean GET": 0, "Lz4Reader": 0}
        patched = []
        for f in (pg, bb):
            client, lean = f.store._client, f.store._lean
            patched.append((f.store, client))

            def counted_client(*a, _orig=client.get_object, n=n, **k):
                n["client get_object"] += 1
                return _orig(*a, **k)

            def counted_lean(_orig=lean, n=n):
                return _CountingLean(_orig(), n)

            client.get_object = counted_client  # instance attributes: gone after this run
            f.store._lean = counted_lean  # the "off" contender puts _NoLean there for its run

        def init(self, raw, n=n):
            n["Lz4Reader"] += 1
            reader_init(self, raw)

        codecs.Lz4Reader.__init__ = init
        try:
            _one_run(bench, fn, dest, settle)
        finally:
            codecs.Lz4Reader.__init__ = reader_init
            for store, client in patched:
                del client.get_object
                store.__dict__.pop("_lean", None)
        counts[label] = n
        out["log"].append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in n.items()))
        if "extract_tar" in label or "tarfile" in label:
            files[label] = {str(p.relative_to(dest)): p.stat().st_size for p in dest.rglob("*") if p.is_file()}
    out["counts"] = counts
    a, b = (files[k] for k in files)
    same = a == b
    out["tar_same_files"] = same
    out["tar_files"] = len(a)
    out["tar_bytes"] = sum(a.values())
    out["log"].append(f"tar contenders wrote the same files: {same} ({len(a)} files, {sum(a.values())} bytes"
                      + ("" if same else f"; only ours {sorted(set(a) - set(b))[:5]}, only tarfile "
                         f"{sorted(set(b) - set(a))[:5]}, sizes differ "
                         f"{[k for k in set(a) & set(b) if a[k] != b[k]][:5]}") + ")")
    shutil.rmtree(dest, ignore_errors=True)
    return out


class _CountingLean:
    def __init__(self, getter, n: dict) -> None:
        self.getter, self.n = getter, n

    def get(self, key, extra):
        resp = self.getter.get(key, extra)
        if resp is not None:
            self.n["lean GET"] += 1
        return resp


def _content_checksum_flag(pg) -> bool:
    """Whether the pgBackRest backup's largest lz4 file has the content-checksum flag (FLG bit 2):
    without it lz4 has no content checksum to verify."""
    base = f"backup/{pg.fmt.stanza}/{pg.backup.name}/"
    key, _ = max(((i.key, i.size) for i in pg.store.list(base) if i.key.endswith(".lz4")), key=lambda o: o[1])
    with pg.store.open_range(key, 0, 7) as head:
        data = head.read()
    return data[:4] == b"\x04\x22\x4d\x18" and bool(data[4] & 0x04)


# -- figures --------------------------------------------------------------------------------------
def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def _figure(path: str, where: str, shipped: str, library: tuple[str, ...], times: dict, cpu: dict, *,
            decides: bool = True) -> dict:
    a = times[shipped]
    fig = {"path": path, "where": where, "shipped": {"label": shipped, "median": round(statistics.median(a), 3),
                                                     "spread": round(_spread(a), 3),
                                                     "cpu_median": round(statistics.median(cpu[shipped]), 3)},
           "library": []}
    for label in library:
        b = times[label]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        fig["library"].append({"label": label, "median": round(statistics.median(b), 3),
                               "spread": round(_spread(b), 3), "cpu_median": round(statistics.median(cpu[label]), 3),
                               "ratio_of_medians": round(statistics.median(b) / statistics.median(a), 3),
                               "paired_ratio_median": round(statistics.median(ratios), 3),
                               "paired_ratio_min": round(min(ratios), 3), "paired_ratio_max": round(max(ratios), 3)})
    main = fig["library"][0]
    threshold = max(fig["shipped"]["spread"], main["spread"])
    fig["threshold"] = round(threshold, 3)
    fig["keeps_its_place"] = main["paired_ratio_median"] - 1 > threshold
    fig["verdict"] = "keeps its place" if fig["keeps_its_place"] else "does not earn its place"
    if main["paired_ratio_median"] < 1 - threshold:
        fig["verdict"] += " (the library path is faster beyond the spread)"
    if not decides:
        fig["verdict"] = ("control: " + ("the shipped path is faster beyond the spread" if fig["keeps_its_place"] else
                                         "slower beyond the spread" if main["paired_ratio_median"] < 1 - threshold
                                         else "within the spread") + "; the verdict is the row above's")
    fig["decides"] = decides
    return fig


def _ratio_text(lib: dict) -> str:
    return (f"{lib['label']} ÷ shipped {lib['paired_ratio_median']:.2f}× round by round "
            f"({lib['paired_ratio_min']:.2f}–{lib['paired_ratio_max']:.2f})")


def markdown(out: dict) -> str:
    rows = [f"{out['runs']} rounds, {out['date_utc']} UTC, concurrency {out['concurrency']}; load average at each "
            f"round's start {out['load_average_per_round']}; restores into {out['restores_write_into']}.", "",
            "| path | measured on | contender | median | CPU (pytest's process) | spread between rounds | "
            "library ÷ shipped, round by round: median (min–max) | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for fig in out["paths"]:
        s = fig["shipped"]
        rows.append(f"| {fig['path']} | {fig['where']} | {s['label']} | {s['median']:.3f} s | {s['cpu_median']:.2f} s "
                    f"| {s['spread']:.0%} | – | **{fig['verdict']}** (needs > {1 + fig['threshold']:.2f}×) |")
        for lib in fig["library"]:
            rows.append(f"| | | {lib['label']} | {lib['median']:.3f} s | {lib['cpu_median']:.2f} s | "
                        f"{lib['spread']:.0%} | {lib['paired_ratio_median']:.2f}× "
                        f"({lib['paired_ratio_min']:.2f}–{lib['paired_ratio_max']:.2f}) | |")
    rows += ["", "Checks (one untimed round before the timed ones):", ""]
    rows += [f"- {line}" for line in out["checks"]["log"]]
    return "\n".join(rows) + "\n"
