"""pytest-pgrestore's benchmark: our restore path against the real tools, on the same data.

    ./test.sh tests/unit -q   # once, as root: PostgreSQL 15, pgBackRest, the venv with .[test]
    apt-get install -y awscli  # the aws CLI contender, which ./test.sh does not install
    "${PGRESTORE_VENV:-$HOME/.cache/pytest-pgrestore/venv}/bin/python" bench/run.py \
        [--scale 70] [--runs 3] [--concurrency 4] [--reuse]

See bench/README.md for what is measured, how, and the latest table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/pgr-bench"),
                    help="where the source, the S3 server's data and the restores live (default %(default)s)")
    ap.add_argument("--scale", type=int, default=70, help="pgbench -i scale; 70 gives ~1.05 GB (default %(default)s)")
    ap.add_argument("--pgbench-seconds", type=int, default=40,
                    help="length of the pgbench run whose WAL is replayed (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported (default %(default)s)")
    ap.add_argument("--concurrency", type=int, default=4,
                    help="our fetch concurrency, pgBackRest's --process-max and the ceiling's (default %(default)s)")
    ap.add_argument("--reuse", action="store_true", help="reuse the data a previous run built in --workdir")
    ap.add_argument("--only", default="all",
                    help="comma-separated stages: fetch, wal, replay, rss, cache, xdist (default: all of "
                         "these), and paths: the hand-written speed paths against the library "
                         "(paths_bench.py; only when named, writes results/paths.json and paths.md)")
    ap.add_argument("--restore-fs", choices=("ext4", "workdir"), default="ext4",
                    help="where restores write: a fresh ext4 with a journal on a loop device (default), or the "
                         "work dir's own filesystem")
    ap.add_argument("--out", type=Path, default=HERE / "results",
                    help="where results.json and results.md are written (default %(default)s)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from harness import Bench

    args = parse_args(argv)
    with Bench(args) as bench:
        bench.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
