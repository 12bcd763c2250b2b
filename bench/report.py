"""The benchmark's tables (Markdown) from its results (the same numbers as results.json)."""

from __future__ import annotations

FORMATS = ("basebackup", "walg", "pgbackrest", "barman")
TOOL = {"pgbackrest": "`pgbackrest restore --process-max={c}`", "barman": "`barman-cloud-restore`"}


def markdown(results: dict) -> str:
    f = results.get("figures", {})
    out = [_machine(results), _targets(f)]
    for section in (_fetch, _wal, _replay, _drill, _cache, _xdist):
        text = section(f)
        if text:
            out.append(text)
    return "\n\n".join(out) + "\n"


def _machine(results: dict) -> str:
    m, d = results.get("machine", {}), results.get("data", {})
    stored = d.get("stored", {})
    return "\n".join([
        "**Machine**: " + ", ".join(str(x) for x in (
            f"{m.get('cpus')} CPUs ({m.get('cpu')})", f"{m.get('memory_mb')} MB RAM", m.get("os"),
            f"kernel {m.get('kernel')}", f"Python {m.get('python')}", m.get("postgresql"), m.get("pgbackrest"))),
        f"load average at start {m.get('load_average_at_start')} (the machine is shared with other test runs); "
        f"the whole benchmark took {results.get('seconds')} s.",
        "",
        f"**Data**: `pgbench -i -s {d.get('scale')}` on PostgreSQL 15: database {_gb(d.get('db_bytes'))}, "
        "every backup and WAL lz4-compressed (bucket totals, backups + WAL: "
        + ", ".join(f"{k} {_mb(v)}" for k, v in stored.items()) + "); "
        "SeaweedFS over TLS on 127.0.0.1; its files in the OS page cache (warm), our download cache off; "
        "each figure the median of the runs, contenders interleaved round by round; before each fetch "
        "contender 1.25x the database's size of page cache is written and freed (untimed), so every "
        "contender's writes meet just-freed memory (this VM's host reclaims memory free for over a second). "
        f"Every restore writes into {m.get('restores_write_into', 'the work dir')}.",
    ])


def _targets(f: dict) -> str:
    rows = ["| target | measured | met |", "|---|---|---|"]
    pg = f.get("fetch pgbackrest", {})
    if "vs_tool" in pg:
        paired = f"; round by round {pg['vs_tool_paired']:.2f}×" if "vs_tool_paired" in pg else ""
        rows.append(f"| base-backup restore throughput ≥ pgBackRest's | {pg['vs_tool']:.2f}× pgBackRest's "
                    f"(pgBackRest format, ratio of the medians{paired}) | {_yes(pg['vs_tool'] >= 1)} |")
    ceil = {fmt: f[f"fetch {fmt}"]["vs_ceiling"] for fmt in FORMATS if "vs_ceiling" in f.get(f"fetch {fmt}", {})}
    if ceil:
        worst = min(ceil, key=ceil.get)
        files = {fmt: f[f"fetch {fmt}"]["vs_ceiling_files"] for fmt in FORMATS
                 if "vs_ceiling_files" in f.get(f"fetch {fmt}", {})}
        also = ("; against the ceiling that writes the backup's own files: "
                + ", ".join(f"{k} {v:.0%}" for k, v in files.items())) if files else ""
        rows.append("| ≥ 80 % of the raw parallel GET + decompress ceiling (one file per object) | "
                    + ", ".join(f"{k} {v:.0%}" for k, v in ceil.items()) + also + f" | {_yes(ceil[worst] >= 0.8)} |")
    r = f.get("replay")
    if r:
        rows.append(f"| WAL delivery adds ≤ 10 % to replay over the local-pg_wal floor | "
                    f"{(r['ours_over_floor'] - 1):+.0%} ({r['ours_seconds']:.2f} s vs {r['floor_seconds']:.2f} s"
                    + (f"; round by round {r['ours_over_floor_paired'] - 1:+.0%}" if "ours_over_floor_paired" in r else "")
                    + ") "
                    f"| {_yes(r['ours_over_floor'] <= 1.10)} |")
    rss = f.get("peak RSS (MB)")
    if rss:
        peak = max(v for k, v in rss.items() if k.startswith("pytest"))
        rows.append(f"| peak RSS of pytest < 300 MB restoring ≥ 1 GB | {peak:.0f} MB | {_yes(peak < 300)} |")
    x = f.get("pytest -n 4")
    if x:
        rows.append(f"| `pytest -n 4` restores exactly once | {x['restores']} restore, used by {', '.join(x['workers'])} "
                    f"| {_yes(x['restores'] == 1)} |")
    return "### Targets\n\n" + "\n".join(rows)


def _fetch(f: dict) -> str:
    rows = ["| format | ours | ours, 1 stream | the tool | ours ÷ tool | `aws s3 cp \\| lz4 \\| tar` | ceiling "
            "| ours ÷ ceiling | ceiling, the backup's files | ours ÷ that |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    c = None
    for fmt in FORMATS:
        fig = f.get(f"fetch {fmt}")
        if not fig:
            continue
        c, size = fig["concurrency"], fig["restored_bytes"]
        tool_key = next((k for k in fig if k.startswith(f"{fmt}: ") and ("restore" in k and "ours" not in k)), None)
        aws = fig.get(f"{fmt}: aws s3 cp | lz4 | tar")
        rows.append("| " + " | ".join([
            fmt, _rate(fig["ours_seconds"], size), _rate(fig.get(f"{fmt}: ours (C=1)"), size),
            f"{TOOL[fmt].format(c=c)} {_rate(fig[tool_key], size)}" if tool_key else "–",
            _ratio(fig.get("vs_tool")), _rate(aws, size), _rate(fig.get(f"{fmt}: ceiling (C={c})"), size),
            _pct(fig.get("vs_ceiling")), _rate(fig.get(f"{fmt}: ceiling, same files (C={c})"), size),
            _pct(fig.get("vs_ceiling_files"))]) + " |")
    if c is None:
        return ""
    return (f"### Base backup: fetch + decompress + extract ({_gb(size)} restored, concurrency {c})\n\n"
            "Seconds (and restored MB/s). *ours ÷ X* is a throughput ratio: above 1 we are faster. The "
            "*ceiling* writes one file per object; *the backup's files* writes the decoded bytes into the same "
            "files a restore creates (member offsets read beforehand, untimed; no tar parsing). pgBackRest's "
            "objects are its files: one ceiling.\n\n"
            + "\n".join(rows))


def _wal(f: dict) -> str:
    w = f.get("WAL delivery (ms per segment)")
    if not w:
        return ""
    rows = ["| format | ours: spool, 4 in flight | ours: one by one | the tool, a process per segment | tool ÷ ours |",
            "|---|---|---|---|---|"]
    rows.append(f"| basebackup | {w['basebackup: ours (spool, 4 in flight)']} | "
                f"{w['basebackup: ours (open_wal, one by one)']} | – | – |")
    rows.append(f"| pgbackrest | {w['pgbackrest: ours (spool, 4 in flight)']} | {w['pgbackrest: ours (open_wal, one by one)']} "
                f"| `archive-get` {w['pgbackrest: archive-get (a process per segment)']} | {w['archive_get_over_spool']}× |")
    rows.append(f"| barman | – | {w['barman: ours (open_wal, one by one)']} | `barman-cloud-wal-restore` "
                f"{w['barman: barman-cloud-wal-restore (a process per segment)']} | {w['wal_restore_over_ours']}× |")
    return "### WAL delivery, milliseconds per 16 MB segment\n\n" + "\n".join(rows)


def _replay(f: dict) -> str:
    r = f.get("replay")
    if not r:
        return ""
    rows = ["| WAL delivered by | replay (server log: `redo done … elapsed`) | over the floor |", "|---|---|---|",
            f"| already in `pg_wal`, crash recovery (PostgreSQL alone) | {r['crash_recovery_seconds']:.2f} s | – |",
            f"| already in `pg_wal`, archive recovery (**the floor**) | {r['floor_seconds']:.2f} s | – |",
            f"| **our spool** (whole drill through pytest) | {r['ours_seconds']:.2f} s | "
            f"{r['ours_over_floor'] - 1:+.0%} |",
            f"| `pgbackrest archive-get` as restore_command | {r['naive_seconds']:.2f} s | "
            f"{r['naive_over_floor'] - 1:+.0%} |"]
    return (f"### Replay of the same {r['segments']} segments ({_mb(r['wal_bytes'])}) from the same base backup\n\n"
            + "\n".join(rows) + f"\n\nReplay waited for WAL {r['replay_waited_seconds']:.2f} s in our runs "
            "(`wal_prefetch.replay_waited_seconds`).")


def _drill(f: dict) -> str:
    d, rss = f.get("drill (pytest, whole restore)"), f.get("peak RSS (MB)")
    parts = []
    if d:
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in d["phases"].items())
        parts.append(f"**A whole drill through pytest** (basebackup format): RTO {d['rto_seconds']:.2f} s — {phases}.")
    if rss:
        procs = ", ".join(f"{k} {v} MB" for k, v in rss.items() if isinstance(v, (int, float))
                          and k not in ("sampled_every_seconds", "restored_bytes"))
        parts.append(f"**Peak RSS** while restoring {_gb(rss.get('restored_bytes'))} (every process pytest starts, "
                     f"PostgreSQL's server excluded; sampled every {rss['sampled_every_seconds']} s): {procs}.")
    return "\n\n".join(parts)


def _cache(f: dict) -> str:
    c = f.get("cache")
    if not c:
        return ""
    return (f"**`--restore-cache`**: fetch phase {c['cold_fetch_seconds']:.2f} s cold ({_mb(c['cold_bytes_network'])} "
            f"from the store), {c['warm_fetch_seconds']:.2f} s warm ({_mb(c['warm_bytes_network'])} from the store, "
            f"{_mb(c['warm_bytes_from_cache'])} from the cache; served_from_cache={str(c['warm_served_from_cache']).lower()}).")


def _xdist(f: dict) -> str:
    x = f.get("pytest -n 4")
    if not x:
        return ""
    return (f"**`pytest -n 4`**: {x['restores']} restore for the whole run, used by {', '.join(x['workers'])} "
            f"(evidence `sharing`); RTO {x['rto_seconds']:.2f} s.")


def _rate(seconds, size) -> str:
    if not seconds:
        return "–"
    return f"{seconds:.2f} s ({size / seconds / 1e6:.0f} MB/s)" if size else f"{seconds:.2f} s"


def _ratio(x) -> str:
    return f"{x:.2f}×" if x else "–"


def _pct(x) -> str:
    return f"{x:.0%}" if x else "–"


def _mb(n) -> str:
    return "?" if n is None else f"{n / 1e6:.0f} MB"


def _gb(n) -> str:
    return f"{n / 1e9:.2f} GB" if n else "?"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"
