"""The spool's deliberate "withheld" mode (the negative control), with the real wrapper script.

A ``before_deliver`` hook that raises :class:`Withheld` for one planned segment makes the spool
answer "absent" for it — at once, not after waiting forever — while every other planned segment
is delivered as usual.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_pgrestore.restore._spool import WalSpool, Withheld, write_wrapper

NAMES = [f"0000000100000000000000{n:02X}" for n in range(3, 7)]


class FilesFormat:
    """A format serving WAL from a dict: ``open_wal(key)``, ``find_wal(name)``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def open_wal(self, key: str):
        return io.BytesIO(self.files[key])

    def find_wal(self, name: str) -> str | None:
        return name if name in self.files else None


@dataclass
class FakePlan:
    segments: list[str]
    segment_keys: dict[str, str] = field(default_factory=dict)


def ask(script: Path, name: str, dest: Path) -> tuple[int, float]:
    began = time.monotonic()
    proc = subprocess.run(["/bin/sh", str(script), name, str(dest)], capture_output=True, timeout=20)
    return proc.returncode, time.monotonic() - began


def test_a_withheld_segment_is_answered_absent_and_the_others_delivered(tmp_path):
    withheld = NAMES[2]

    def hold_back(name: str) -> None:
        if name == withheld:
            raise Withheld("negative control")

    fmt = FilesFormat({n: n.encode() * 10 for n in NAMES})
    plan = FakePlan(NAMES, {n: n for n in NAMES})
    script = write_wrapper(tmp_path / "restore_wal.sh", tmp_path / "spool", os.getpid(), max_wait_s=60)
    dest = tmp_path / "RECOVERYXLOG"
    with WalSpool(fmt, plan, tmp_path / "spool", owner=None, before_deliver=hold_back):
        results = {name: ask(script, name, dest) for name in NAMES}
        delivered = dest.read_bytes()
    assert {n: code for n, (code, _) in results.items()} == {n: 1 if n == withheld else 0 for n in NAMES}
    assert results[withheld][1] < 5  # answered, not waited for until max_wait_s
    assert delivered == NAMES[-1].encode() * 10


def test_fetch_all_counts_a_withheld_segment_as_done(tmp_path):
    """A copy into a container fetches everything first: a withheld file must not stall it."""

    def hold_back(name: str) -> None:
        if name == NAMES[0]:
            raise Withheld("negative control")

    fmt = FilesFormat({n: b"x" for n in NAMES})
    spool = WalSpool(
        fmt, FakePlan(NAMES, {n: n for n in NAMES}), tmp_path / "spool", owner=None, before_deliver=hold_back
    )
    with spool:
        spool.fetch_all({}, timeout=10)
    assert spool.stats.withheld == [NAMES[0]]
    assert (tmp_path / "spool" / f"{NAMES[0]}.absent").exists()
    assert sorted(p.name for p in (tmp_path / "spool").iterdir() if len(p.name) == 24) == NAMES[1:]
