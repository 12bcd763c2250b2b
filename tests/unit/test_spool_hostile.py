"""The WAL spool against a hostile server user (issue 18 item 1: root trusts nothing the server
user can write).

The spool directory belongs to the server user (the wrapper moves files out of it and writes
``req/<name>``), and the restored server runs code from the backup as that user.  The harness,
often root, must never follow, list, chown or delete through anything planted there.  Each test
makes the trap as the server would — a real ``postgres`` process planting real symlinks — aims it
at root-owned canaries outside the spool, and checks that the canaries keep their content, mode
and owner, that nothing appeared or vanished outside the spool, and that the spool still answers
(a marker, a logged error), its threads alive.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shlex
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_spool_withheld import FakePlan, FilesFormat

from pytest_pgrestore.restore import _spool
from pytest_pgrestore.restore._spool import WalSpool, Withheld, write_wrapper

try:
    _PG = pwd.getpwnam("postgres")
except KeyError:
    _PG = None

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or _PG is None,
                                reason="needs root and a postgres OS user (the server user)")

NAMES = [f"0000000100000000000000{n:02X}" for n in range(0x10, 0x18)]
OUTSIDE_PLAN = "0000000100000000000000F0"  # the store holds it, the plan does not: fetched on demand
SECRET = b"root's secret\n"


def owner() -> tuple[int, int]:
    assert _PG is not None
    return _PG.pw_uid, _PG.pw_gid


def as_server(cwd: Path, script: str) -> None:
    """Run ``script`` as the server user, the way code in the restored server would."""
    uid, gid = owner()
    proc = subprocess.run(["/bin/sh", "-ec", script], cwd=cwd, user=uid, group=gid, extra_groups=[],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (symlinks not followed): type, mode, owner, content or target."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames]:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                body: bytes | str | None = Path(p).read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            seen[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                              st.st_uid, st.st_gid, body)
    return seen


@dataclass
class Site:
    """``outside/``: root's canaries; ``run/``: the server user's run dir, holding ``spool/``."""

    root: Path
    before: dict[str, tuple]

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def canary(self) -> Path:
        return self.outside / "canary"

    @property
    def canary_dir(self) -> Path:  # holds a WAL-like name, a secret, and a req/ of its own
        return self.outside / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def spool(self) -> Path:
        return self.run / "spool"

    def assert_untouched(self) -> None:
        assert snapshot(self.outside) == self.before, "root wrote, chowned or deleted outside the spool"
        assert sorted(os.listdir(self.root)) == ["outside", "run"]


@pytest.fixture
def site(tmp_path) -> Site:
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    canary = outside / "canary"
    canary.write_bytes(SECRET)
    canary.chmod(0o640)
    etc = outside / "etc"
    (etc / "req").mkdir(parents=True, mode=0o755)
    for p in (etc / "passwd", etc / NAMES[0], etc / "req" / "shadow", etc / "req" / "0000000100000000000000AB"):
        p.write_bytes(SECRET)
        p.chmod(0o600)
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, *owner())  # as RunDir.create leaves it: the server user's
    (run / "spool").mkdir(mode=0o700)
    return Site(tmp_path, snapshot(outside))


def store(*, without: str | None = None) -> FilesFormat:
    return FilesFormat({n: n.encode() * 100 for n in [*NAMES, OUTSIDE_PLAN] if n != without})


def plan() -> FakePlan:
    return FakePlan(list(NAMES), {n: n for n in NAMES})


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def regular_and_owned(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISREG(st.st_mode) and (st.st_uid, st.st_gid) == owner()


def spool_threads_alive() -> bool:
    alive = {t.name for t in threading.enumerate()}
    return "wal-requests" in alive


def delivered(spool: Path) -> list[str]:
    return sorted(n for n in os.listdir(spool) if n in NAMES or n == OUTSIDE_PLAN)


def test_a_symlink_planted_at_an_absent_marker_is_replaced_not_written_through(site):
    held = NAMES[2]

    def hold_back(name: str) -> None:
        if name == held:
            raise Withheld("negative control")

    spool = WalSpool(store(), plan(), site.spool, owner=owner(), before_deliver=hold_back)
    as_server(site.spool, f"ln -s {shlex.quote(str(site.canary))} {held}.absent")
    with spool:
        spool.fetch_all({}, timeout=20)
    site.assert_untouched()
    marker = site.spool / f"{held}.absent"
    assert regular_and_owned(marker) and marker.read_bytes() == b""  # the wrapper still gets its answer
    assert spool.stats.withheld == [held]
    assert delivered(site.spool) == [n for n in NAMES if n != held]


def test_a_symlink_planted_at_an_error_marker_is_replaced_not_written_through(site):
    broken = NAMES[3]
    spool = WalSpool(store(without=broken), plan(), site.spool, owner=owner())
    as_server(site.spool, f"ln -s {shlex.quote(str(site.canary))} {broken}.error")
    with spool:
        spool.fetch_all({}, timeout=20)
    site.assert_untouched()
    marker = site.spool / f"{broken}.error"
    assert regular_and_owned(marker) and marker.read_text().startswith(f"{broken}: ")
    assert list(spool.stats.errors) == [broken]
    assert delivered(site.spool) == [n for n in NAMES if n != broken]


def test_req_replaced_by_a_symlink_is_neither_listed_nor_emptied(site, caplog):
    caplog.set_level(logging.WARNING, logger=_spool.__name__)
    spool = WalSpool(store(), plan(), site.spool, owner=owner())
    with spool:
        spool.fetch_all({}, timeout=20)
        as_server(site.spool, f"mv req req.gone && ln -s {shlex.quote(str(site.canary_dir / 'req'))} req")
        time.sleep(0.3)  # many turns of the request loop (every 10 ms)
        site.assert_untouched()
        assert wait_for(lambda: "req" in caplog.text and "replaced" in caplog.text)
        assert spool_threads_alive()
        # the harness keeps answering in the directory it made, wherever the server moved it
        as_server(site.spool, f": > req.gone/{OUTSIDE_PLAN}")
        assert wait_for(lambda: (site.spool / OUTSIDE_PLAN).exists())
    site.assert_untouched()
    assert any(r.levelno >= logging.ERROR and "req" in r.getMessage() for r in caplog.records)


def test_the_spool_dir_swapped_for_a_symlink_is_not_written_through(site, caplog):
    caplog.set_level(logging.WARNING, logger=_spool.__name__)
    spool = WalSpool(store(), plan(), site.spool, owner=owner(), window=len(NAMES))
    spool.start(head_start=1)
    try:
        assert wait_for(lambda: spool.stats.segments >= 2)
        as_server(site.run, f"mv spool spool.old && ln -s {shlex.quote(str(site.canary_dir))} spool")
        spool.widen()  # prefetch goes on: every further segment, after the swap
        assert wait_for(lambda: spool.stats.segments == len(NAMES))
        site.assert_untouched()
        assert wait_for(lambda: "spool directory" in caplog.text and "replaced" in caplog.text)
        assert spool_threads_alive()
        as_server(site.run / "spool.old", f": > req/{OUTSIDE_PLAN}")  # still answered where it was made
        assert wait_for(lambda: (site.run / "spool.old" / OUTSIDE_PLAN).exists())
    finally:
        spool.stop()
    site.assert_untouched()
    assert sorted(os.listdir(site.run)) == ["spool", "spool.old"]
    assert delivered(site.run / "spool.old") == sorted([*NAMES, OUTSIDE_PLAN])
    assert spool.dir == site.spool  # the public path is unchanged; only root's operations use the fd


def test_a_symlink_planted_at_the_temp_name_is_left_alone(site, monkeypatch):
    """The server guessed the temp name (before: ``.tmp.<name>.<thread id>``, both known to it)
    and planted a symlink there first: root must not write through it, nor give up the segment."""
    tokens = iter(["guessed"])  # the first temp name is one the server knows; later ones are random
    monkeypatch.setattr(_spool, "_temp_token", lambda: next(tokens, None) or secrets.token_hex(16), raising=False)
    target = NAMES[0]
    canary = shlex.quote(str(site.canary))

    def plant(name: str) -> None:  # runs in the fetching thread, right before the temp file is made
        if name == target:
            as_server(site.spool, f"ln -s {canary} .tmp.{name}.{threading.get_ident()}; "
                                  f"ln -s {canary} .tmp.{name}.guessed")

    spool = WalSpool(store(), plan(), site.spool, owner=owner(), concurrency=1, before_deliver=plant)
    with spool:
        spool.fetch_all({}, timeout=20)
    site.assert_untouched()
    assert delivered(site.spool) == NAMES
    assert all(regular_and_owned(site.spool / n) and (site.spool / n).read_bytes() == n.encode() * 100
               for n in NAMES)
    assert not spool.stats.errors
    assert (site.spool / f".tmp.{target}.guessed").is_symlink()  # left where the server put it


def test_request_names_outside_the_wal_name_pattern_are_dropped_unanswered(site):
    asked = []

    class Watched(FilesFormat):
        def find_wal(self, name: str) -> str | None:
            asked.append(name)
            return super().find_wal(name)

    spool = WalSpool(Watched(store().files), plan(), site.spool, owner=owner())
    with spool:
        spool.fetch_all({}, timeout=20)
        as_server(site.spool, ": > 'req/pass wd'; : > req/.absent; : > 'req/x;y'; : > 'req/a$b'")
        assert wait_for(lambda: os.listdir(site.spool / "req") == [])
        as_server(site.spool, f": > req/{OUTSIDE_PLAN}")
        assert wait_for(lambda: (site.spool / OUTSIDE_PLAN).exists())
    site.assert_untouched()
    assert asked == [OUTSIDE_PLAN]  # the bad names never reached the store, nor left markers
    assert not [n for n in os.listdir(site.spool) if n.endswith((".absent", ".error"))]


def test_a_directory_planted_in_req_does_not_stop_the_request_thread(site, caplog):
    caplog.set_level(logging.WARNING, logger=_spool.__name__)
    spool = WalSpool(store(), plan(), site.spool, owner=owner())
    with spool:
        spool.fetch_all({}, timeout=20)
        as_server(site.spool, "mkdir req/0000000100000000000000AC")
        time.sleep(0.3)
        as_server(site.spool, f": > req/{OUTSIDE_PLAN}")
        assert wait_for(lambda: (site.spool / OUTSIDE_PLAN).exists())
        assert spool_threads_alive()
    site.assert_untouched()
    assert "0000000100000000000000AC" in caplog.text


def test_a_symlink_at_the_wrappers_path_is_replaced_not_written_through(site):
    """The wrapper script goes into the run dir, which the server user owns."""
    as_server(site.run, f"ln -s {shlex.quote(str(site.canary))} restore_wal.sh")
    script = write_wrapper(site.run / "restore_wal.sh", site.spool, os.getpid(), max_wait_s=5)
    site.assert_untouched()
    st = script.lstat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    assert script.read_text().startswith("#!/bin/sh")
