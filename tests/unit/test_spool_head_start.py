"""The spool's head start: while the base backup downloads, only replay's first segments.

Started early with ``head_start=N`` the spool fetches the first N planned segments and stops;
:meth:`WalSpool.widen` (the server is starting) lets it run the whole window ahead.
"""

from __future__ import annotations

import time

from test_spool_withheld import FakePlan, FilesFormat

from pytest_pgrestore.restore._spool import HEAD_START_SEGMENTS, WalSpool

NAMES = [f"00000001000000000000{n:04X}" for n in range(3, 3 + 30)]


def spooled(spool_dir) -> set[str]:
    return {p.name for p in spool_dir.iterdir() if p.is_file()}


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_head_start_fetches_the_first_segments_only_until_widened(tmp_path):
    fmt = FilesFormat({n: n.encode() for n in NAMES})
    spool = WalSpool(fmt, FakePlan(NAMES, {n: n for n in NAMES}), tmp_path / "spool", owner=None, window=20)
    spool.start(head_start=4)
    try:
        assert wait_for(lambda: len(spooled(tmp_path / "spool")) >= 5)
        time.sleep(0.3)  # time enough to run further, were it allowed to
        held = spooled(tmp_path / "spool")
        assert held == set(NAMES[:5])  # the cursor's segment and 4 ahead of it
        spool.widen()
        assert wait_for(lambda: len(spooled(tmp_path / "spool")) >= 21)
        time.sleep(0.3)
        assert spooled(tmp_path / "spool") == set(NAMES[:21])  # now the window: 20 ahead
    finally:
        spool.stop()


def test_without_a_head_start_the_whole_window_is_fetched(tmp_path):
    fmt = FilesFormat({n: n.encode() for n in NAMES})
    with WalSpool(fmt, FakePlan(NAMES, {n: n for n in NAMES}), tmp_path / "spool", owner=None, window=20):
        assert wait_for(lambda: len(spooled(tmp_path / "spool")) >= 21)
        time.sleep(0.3)
        assert spooled(tmp_path / "spool") == set(NAMES[:21])


def test_a_head_start_never_runs_past_the_window(tmp_path):
    fmt = FilesFormat({n: n.encode() for n in NAMES})
    spool = WalSpool(fmt, FakePlan(NAMES, {n: n for n in NAMES}), tmp_path / "spool", owner=None, window=5)
    spool.start(head_start=HEAD_START_SEGMENTS * 4)
    try:
        assert wait_for(lambda: len(spooled(tmp_path / "spool")) >= 6)
        time.sleep(0.3)
        assert spooled(tmp_path / "spool") == set(NAMES[:6])
    finally:
        spool.stop()
