"""Stage ``fetch``: base backup fetch + extract, ours against the tools and a raw ceiling.

For each format, in rounds (one run of every contender per round, so load drifting on a shared
machine hits them alike), into a fresh directory each time:

* ours        the format's ``materialize`` through the fetch layer (``fetch_concurrency`` = C);
* ours, C=1   the same with one download in flight (no parallel ranged GETs);
* the tool    ``pgbackrest restore --process-max=C`` / ``barman-cloud-restore``;
* aws s3 cp   ``aws s3 cp s3://… - | lz4 -dc | tar -x`` (the plain tools; tar formats only);
* ceiling     raw parallel GETs (C in flight, 8 MiB ranges) + lz4 decompression + write, one
              file per object, no tar parsing — what this machine can do with these objects.
"""

from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

PART = 8 << 20


def run(bench) -> None:
    c = bench.args.concurrency
    for fmt in ("basebackup", "walg", "pgbackrest", "barman"):
        contenders = contenders_for(bench, fmt, c)
        medians = rounds(bench, fmt, contenders)
        written = bench.state.get("db_bytes")
        ours = medians[f"{fmt}: ours (C={c})"]
        fig = {"ours_seconds": ours, "restored_bytes": written, "concurrency": c}
        for label, secs in medians.items():
            fig[label] = secs
        runs = bench.results["runs"]
        for other, key in (("tool", _tool_label(fmt, c)), ("ceiling", f"{fmt}: ceiling (C={c})"),
                           ("ceiling_files", f"{fmt}: ceiling, same files (C={c})"),
                           ("aws_cli", f"{fmt}: aws s3 cp | lz4 | tar"), ("ours_c1", f"{fmt}: ours (C=1)")):
            if key in medians:
                fig[f"vs_{other}"] = round(medians[key] / ours, 3)  # throughput ratio ours ÷ theirs
                # the same ratio round by round (both ran back to back, under the same load), its median
                fig[f"vs_{other}_paired"] = round(statistics.median(
                    t / o for t, o in zip(runs[key], runs[f"{fmt}: ours (C={c})"], strict=True)), 3)
        bench.figure(f"fetch {fmt}", **fig)


def _tool_label(fmt: str, c: int) -> str:
    return {"pgbackrest": f"pgbackrest: pgbackrest restore --process-max={c}",
            "barman": "barman: barman-cloud-restore"}.get(fmt, "")


def rounds(bench, fmt: str, contenders: dict) -> dict[str, float]:
    import statistics
    import time

    from build import log

    dest = bench.restore_root / "fetch-dest"
    times: dict[str, list[float]] = {label: [] for label in contenders}
    settle = int(bench.state.get("db_bytes", 1 << 30) * 1.25)  # what a contender writes, and some
    for _ in range(bench.args.runs):
        for label, fn in contenders.items():
            bench.fresh(dest)
            os.sync()  # the previous run's dirty pages are not the next one's cost
            bench.settle_memory(settle)
            t = time.monotonic()
            fn(dest)
            times[label].append(time.monotonic() - t)
    out = {}
    for label, values in times.items():
        out[label] = round(statistics.median(values), 3)
        bench.results["runs"][label] = [round(v, 3) for v in values]
        log(f"  {label:<58} {out[label]:8.3f} s  ({', '.join(f'{v:.2f}' for v in values)})")
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    return out


def contenders_for(bench, fmt: str, c: int) -> dict:
    from pytest_pgrestore.formats import get_format
    from pytest_pgrestore.store._s3 import S3Store

    url = bench.state[fmt]["url"]
    bucket, _, rest = url[len("s3://"):].partition("/")
    prefix, _, query = rest.partition("?")
    store = S3Store(bucket, prefix, env=bench.env)
    fmt_obj = get_format(store, fmt, env=bench.env, selector=dict([query.split("=")]) if query else {})
    backup = fmt_obj.catalog().backups[-1]
    out = {f"{fmt}: ours (C={c})": lambda d: ours(fmt_obj, backup, d, c),
           f"{fmt}: ours (C=1)": lambda d: ours(fmt_obj, backup, d, 1)}
    if fmt == "pgbackrest":
        out[_tool_label(fmt, c)] = lambda d: bench.pgbackrest.run(
            "restore", f"--set={backup.name}", f"--pg1-path={d}", "--type=none", f"--process-max={c}",
            timeout=1800)
    if fmt == "barman":
        out[_tool_label(fmt, c)] = lambda d: barman_restore(bench, backup.name, d)
    objects = backup_objects(fmt, fmt_obj, backup)
    if fmt in ("basebackup", "barman"):
        out[f"{fmt}: aws s3 cp | lz4 | tar"] = lambda d: aws_cp_tar(bench, bucket, prefix, objects[0][0], d)
    out[f"{fmt}: ceiling (C={c})"] = lambda d: ceiling(bench, bucket, prefix, objects, d, c)
    if fmt != "pgbackrest":  # pgBackRest's objects are the files already: its ceiling writes the same tree
        layouts = tar_layouts(bench, bucket, prefix, objects)
        out[f"{fmt}: ceiling, same files (C={c})"] = lambda d: ceiling(bench, bucket, prefix, objects, d, c,
                                                                      layouts=layouts)
    return out


def ours(fmt_obj, backup, dest: Path, concurrency: int) -> None:
    from pytest_pgrestore.restore._fetch import fetching

    settings = SimpleNamespace(fetch_concurrency=concurrency, cache=None, progress="off")
    result = SimpleNamespace(evidence={})
    with fetching(fmt_obj, settings, result, backup=backup) as reading:
        reading.materialize(backup, dest / "pgdata", dest, owner=None)


def backup_objects(fmt: str, fmt_obj, backup) -> list[tuple[str, int]]:
    """(key relative to the store's prefix, size) of every data object of ``backup``, biggest first."""
    store = fmt_obj.store
    if fmt == "basebackup":
        keys = list(backup.details["tars"].values())
    elif fmt == "walg":
        keys = list(backup.details["tars"].values())
    elif fmt == "barman":
        keys = list(backup.details["tars"].values())
    else:  # pgbackrest: every file of the backup's folder but the manifest
        base = f"backup/{fmt_obj.stanza}/{backup.name}/"
        return sorted(((i.key, i.size) for i in store.list(base) if i.key.endswith(".lz4")),
                      key=lambda o: -o[1])
    return sorted(((k, store.stat(k).size) for k in keys), key=lambda o: -o[1])


def barman_restore(bench, backup_id: str, dest: Path) -> None:
    exe = Path(sys.executable).parent / "barman-cloud-restore"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **bench.tool_env}
    subprocess.run([str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", bench.s3.https_endpoint,
                    "s3://barman/cloud", "pg", backup_id, str(dest / "pgdata")],
                   check=True, capture_output=True, env=env, timeout=1800)


def aws_cp_tar(bench, bucket: str, prefix: str, key: str, dest: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           **bench.tool_env}
    url = f"s3://{bucket}/{prefix}/{key}"
    subprocess.run(f"aws --endpoint-url {bench.s3.https_endpoint} s3 cp {url} - | lz4 -q -dc | tar -x -C {dest}",
                   shell=True, check=True, capture_output=True, env=env, timeout=1800)


# -- the ceiling ----------------------------------------------------------------------------------
def ceiling(bench, bucket: str, prefix: str, objects: list[tuple[str, int]], dest: Path, c: int,
            layouts: dict[str, list[tuple[int, int, str]]] | None = None) -> None:
    """Raw parallel GETs + lz4 decompression + writes: large objects as ranged parts (C in flight)
    decoded in order; small ones C at a time, whole.  Decoding and writing run on two threads.

    With ``layouts`` (a tar object → its members' data offsets, sizes and paths, read beforehand
    and untimed) the decoded bytes land in the backup's own files instead of one file per object:
    the same files a restore creates, with no tar parsing."""
    client = raw_client(bench, c)
    pool = ThreadPoolExecutor(c)

    def out(key: str, name: str):
        return (dest, layouts[key]) if layouts else dest / name

    try:
        small = [o for o in objects if o[1] <= PART]
        for i, (key, size) in enumerate(o for o in objects if o[1] > PART):
            _large(client, pool, bucket, f"{prefix}/{key}", size, out(key, f"large-{i}"), c)
        list(pool.map(lambda o: _small(client, bucket, f"{prefix}/{o[0]}", out(o[0], f"small-{hash(o[0])}")),
                      small))
    finally:
        pool.shutdown()
        client.close()


def raw_client(bench, c: int):
    import boto3
    from botocore.config import Config

    env = bench.env
    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    return session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], verify=env["AWS_CA_BUNDLE"],
                          config=Config(s3={"addressing_style": "path"}, max_pool_connections=c + 2))


def _small(client, bucket: str, key: str, out) -> None:
    import lz4.frame

    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if isinstance(out, Path):
        out.write_bytes(lz4.frame.decompress(body))
    else:
        q: queue.Queue = queue.Queue()
        q.put(lz4.frame.decompress(body))
        q.put(None)
        _tree_write_loop(*out, q)


def _large(client, pool, bucket: str, key: str, size: int, out: Path, c: int) -> None:
    import lz4.frame

    def get(start: int) -> bytes:
        end = min(start + PART, size) - 1
        return client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}")["Body"].read()

    starts = list(range(0, size, PART))
    pending: list = []
    dec = lz4.frame.LZ4FrameDecompressor()
    q: queue.Queue = queue.Queue(16)
    if isinstance(out, Path):
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        writer = threading.Thread(target=_write_loop, args=(fd, q))
    else:
        fd = None
        writer = threading.Thread(target=_tree_write_loop, args=(*out, q))
    writer.start()
    try:
        nxt = 0
        while nxt < len(starts) or pending:
            while nxt < len(starts) and len(pending) < c:
                pending.append(pool.submit(get, starts[nxt]))
                nxt += 1
            data = memoryview(pending.pop(0).result())
            for i in range(0, len(data), 128 << 10):  # ~1 MB of output a step: cache-sized, no huge buffers
                q.put(dec.decompress(data[i : i + (128 << 10)]))
    finally:
        q.put(None)
        writer.join()
        if fd is not None:
            os.close(fd)


def _write_loop(fd: int, q: queue.Queue) -> None:
    while (data := q.get()) is not None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]


def _tree_write_loop(dest: Path, layout: list[tuple[int, int, str]], q: queue.Queue) -> None:
    """Write a decoded tar stream's member data into their files (``layout``: data offset, size,
    path, in stream order); headers and padding are skipped, no header is parsed."""
    pos, i, fd = 0, 0, None
    while (data := q.get()) is not None:
        view, start = memoryview(data), pos
        pos += len(view)
        off = 0
        while i < len(layout):
            at, size, rel = layout[i]
            if start + off < at:  # a header or padding before the member's data
                if at >= pos:
                    break
                off = at - start
            if fd is None:
                path = dest / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            end = min(len(view), at + size - start)
            chunk = view[off:end]
            while chunk:
                chunk = chunk[os.write(fd, chunk):]
            off = end
            if start + off < at + size:
                break  # the member goes on in the next chunk
            os.close(fd)
            fd, i = None, i + 1
    if fd is not None:
        os.close(fd)


def tar_layouts(bench, bucket: str, prefix: str, objects: list[tuple[str, int]]) -> dict[str, list]:
    """Each tar object's regular members as (data offset, size, path), read once (untimed)."""
    import tarfile

    import lz4.frame

    cache = bench.__dict__.setdefault("_tar_layouts", {})
    client = raw_client(bench, 1)
    try:
        for key, _size in objects:
            if (bucket, key) in cache:
                continue
            body = client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"]
            with lz4.frame.LZ4FrameFile(body, mode="rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                cache[(bucket, key)] = [(m.offset_data, m.size, m.name.lstrip("/")) for m in tar if m.isreg()]
    finally:
        client.close()
    return {key: cache[(bucket, key)] for key, _ in objects}
