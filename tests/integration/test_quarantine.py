"""A hostile PGDATA restores quarantined: none of production's side effects fire.

The backup carries a ``postgresql.conf`` and a ``postgresql.auto.conf`` (ALTER SYSTEM) full of
settings that would make a restored copy reach out — archive, clean up or fetch WAL (each a
command that leaves a canary file), follow a primary or apply an enabled logical subscription (a
TCP listener of ours counts the connections), wait for a synchronous standby — or refuse to start (a missing preload library,
ssl without certificates, 64 GB of shared_buffers, a German lc_messages), plus a
``standby.signal``.  The source itself never reloads, so it keeps its working settings.

The control twin starts the same PGDATA with a plain ``postgres -D`` to prove the canaries
are live: without quarantine they do fire.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from it_support import our_postgres_processes, run_dirs
from psycopg import sql

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.restore._rundir import free_port
from pytest_pgrestore.runtimes._local import server_owner

pytestmark = pytest.mark.integration

_OWNER = server_owner()  # (uid, gid) of the postgres user when we are root, else None: ourselves


def _give(path: Path) -> None:
    if _OWNER:
        os.chown(path, *_OWNER)


def _as_server() -> dict:
    return {"user": _OWNER[0], "group": _OWNER[1], "extra_groups": []} if _OWNER else {}


class ConnectionCounter:
    """A TCP listener on 127.0.0.1 that counts connections and closes each at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@dataclass
class Hostile:
    repo: Path
    base_tar: Path
    canaries: Path
    listener: ConnectionCounter
    bindir: Path
    rows: int

    def fired(self) -> list[str]:
        return sorted(p.name for p in self.canaries.iterdir())

    def reset_canaries(self) -> None:
        for p in self.canaries.iterdir():
            p.unlink()


def hostile_settings(canaries: Path, repo: Path, port: int, origin: str) -> dict[str, str]:
    def canary(name: str) -> str:
        return f"touch {canaries}/{name}.{origin}"

    return {
        "archive_mode": "always",
        "archive_command": canary("archive_command"),
        "archive_cleanup_command": canary("archive_cleanup_command"),
        "recovery_end_command": canary("recovery_end_command"),
        "restore_command": f"{canary('restore_command')} && cp {repo}/wal/%f %p",
        "primary_conninfo": f"host=127.0.0.1 port={port} user=x connect_timeout=2",
        "synchronous_standby_names": "*",
        "shared_preload_libraries": "missing_lib_xyz",
        "ssl": "on",
        "shared_buffers": "64GB",
        "recovery_target_time": "2001-02-03 04:05:06+00",
    }


# lc_messages is checked against the installed locales, and only C/POSIX exist here: ALTER SYSTEM
# refuses it, so it goes into both files as plain text (a plain start then dies on it).
_GERMAN = "lc_messages = 'de_DE.UTF-8'\n"


def _conf_lines(settings: dict[str, str]) -> str:
    return "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())


def hostile_backup(src: SourceCluster, canaries: Path, port: int):
    """A base backup whose PGDATA carries the hostile files; the running source never sees them."""
    conf, auto = src.pgdata / "postgresql.conf", src.pgdata / "postgresql.auto.conf"
    standby = src.pgdata / "standby.signal"
    saved = conf.read_bytes(), auto.read_bytes()
    try:
        with src.connect() as conn:  # ALTER SYSTEM only writes auto.conf: without a reload nothing applies
            for name, value in hostile_settings(canaries, src.repo, port, "auto").items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                )
            # an enabled logical subscription: its apply worker would connect to the "publisher" (the listener)
            publisher = f"host=127.0.0.1 port={port} user=x connect_timeout=2"
            conn.execute(sql.SQL("CREATE SUBSCRIPTION hostile_sub CONNECTION {} PUBLICATION p WITH (connect = false)")
                         .format(sql.Literal(publisher)))
            conn.execute("ALTER SUBSCRIPTION hostile_sub ENABLE")
        with auto.open("a") as f:
            f.write(_GERMAN)
        with conf.open("a") as f:
            f.write("# hostile\n" + _conf_lines(hostile_settings(canaries, src.repo, port, "conf")) + _GERMAN)
        standby.touch()
        return src.backup()
    finally:
        conf.write_bytes(saved[0])
        auto.write_bytes(saved[1])
        standby.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def hostile(workroot):
    root = workroot / "hostile"
    root.mkdir(mode=0o755)
    canaries = root / "canaries"
    canaries.mkdir(mode=0o755)
    _give(canaries)
    listener = ConnectionCounter()
    try:
        with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
            rows = len(src.commit_rows(2))
            backup = hostile_backup(src, canaries, listener.port)
            rows += len(src.commit_rows(2))
            src.checkpoint()  # replayed later, it lets the control make a restartpoint
            rows += len(src.commit_rows(2))
            src.switch_wal()
        assert list(canaries.iterdir()) == [], "the source itself ran a hostile command"
        yield Hostile(src.repo, backup.path / "base.tar", canaries, listener, src.bindir, rows)
    finally:
        listener.close()


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


def store_listing(repo: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(repo)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in repo.rglob("*")}


QUARANTINED = (
    "archive_mode", "archive_cleanup_command", "recovery_end_command", "primary_conninfo",
    "synchronous_standby_names", "shared_preload_libraries", "ssl", "lc_messages", "shared_buffers",
    "recovery_target_time", "restore_command",
)  # fmt: skip


def test_hostile_pgdata_restores_and_no_canary_fires(hostile, settings_factory):
    hostile.reset_canaries()
    before, conns = store_listing(hostile.repo), hostile.listener.count
    with Restorer(settings_factory(f"file://{hostile.repo}")).restore() as inst:
        # as the superuser over TCP: the probes below (a write, a WAL switch, a checkpoint) need it,
        # and drills connect as the non-superuser drill role
        with psycopg.connect(inst.dsn_for(user=inst.user), autocommit=True) as conn:
            (rows,) = conn.execute("select count(*) from t").fetchone()
            (subscribed,) = conn.execute("select subenabled from pg_subscription where subname = 'hostile_sub'").fetchone()
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in QUARANTINED}
            # SHOW archive_command says "(disabled)" when archive_mode is off; the value itself:
            (settings["archive_command"],) = conn.execute(
                "select reset_val from pg_settings where name = 'archive_command'"
            ).fetchone()
            # a commit would hang on synchronous_standby_names; a WAL switch wakes any archiver
            conn.execute("set statement_timeout = '5s'")
            conn.execute("create table after_restore as select 1 as x")
            conn.execute("select pg_switch_wal()")
            conn.execute("checkpoint")
            (in_recovery,) = conn.execute("select pg_is_in_recovery()").fetchone()
        time.sleep(2)  # give an archiver that should not exist the time to run
        result = inst.result
        kept = result.evidence["kept_from_production"]
        kept_auto = Path(kept["postgresql.auto.conf"]).read_bytes()
        ours = (inst.run_dir / "pgdata" / "postgresql.auto.conf").read_text()
        run_dir = str(inst.run_dir)
    assert (rows, result.outcome, in_recovery, subscribed) == (hostile.rows, "REACHED", False, True)
    assert hostile.fired() == []
    assert hostile.listener.count == conns
    assert store_listing(hostile.repo) == before
    assert not list(hostile.repo.rglob("*.history"))
    restore_command = settings.pop("restore_command")
    assert run_dir in restore_command and "restore_wal.sh" in restore_command
    assert settings == {
        "archive_mode": "off", "archive_command": "", "archive_cleanup_command": "",
        "recovery_end_command": "", "primary_conninfo": "", "synchronous_standby_names": "",
        "shared_preload_libraries": "", "ssl": "off", "lc_messages": "C", "shared_buffers": "128MB",
        "recovery_target_time": "",
    }  # fmt: skip
    assert {"postgresql.auto.conf", "standby.signal"} <= kept.keys()
    with tarfile.open(hostile.base_tar) as tar:
        assert kept_auto == tar.extractfile("postgresql.auto.conf").read()
    assert b"missing_lib_xyz" in kept_auto
    assert ours.startswith("# replaced by pytest-pgrestore")


# -- the control: the same PGDATA, no quarantine ------------------------------------------------
class PlainServer:
    """``postgres -D`` on an unpacked copy of the hostile base backup, as the postgres user.

    Only what would stop the server from starting at all is overridden, plus the weird
    recovery_target_time, which would pause replay before the walreceiver ever starts; the
    archive, restore, recovery and replication commands stay production's.
    """

    def __init__(self, hostile: Hostile, root: Path) -> None:
        self.hostile, self.root = hostile, root
        self.pgdata, self.sock = root / "pgdata", root / "sock"
        self.log, self.port = root / "postgres.log", free_port()
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> PlainServer:
        try:
            self._unpack()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                if self.proc.poll() is not None:
                    break
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.root, ignore_errors=True)

    def _unpack(self) -> None:
        self.root.mkdir(mode=0o755)
        for path in (self.pgdata, self.sock):
            path.mkdir(mode=0o700)
            _give(path)
        subprocess.run(
            ["tar", "-xf", str(self.hostile.base_tar), "-C", str(self.pgdata)],
            check=True,
            **_as_server(),
        )
        for name in ("postgresql.conf", "postgresql.auto.conf"):  # a missing locale is fatal even under -c
            conf = self.pgdata / name
            conf.write_text(conf.read_text().replace(_GERMAN, ""))

    def _start(self) -> None:
        overrides = {
            "port": str(self.port), "unix_socket_directories": str(self.sock), "listen_addresses": "",
            "ssl": "off", "shared_preload_libraries": "", "shared_buffers": "128MB", "lc_messages": "C",
            "recovery_target_time": "",
        }  # fmt: skip
        argv = [str(self.hostile.bindir / "postgres"), "-D", str(self.pgdata)]
        for name, value in overrides.items():
            argv += ["-c", f"{name}={value}"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **_as_server(),
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
                start_new_session=True,
            )

    def sql(self, query: str) -> None:
        import psycopg

        dsn = f"host={self.sock} port={self.port} user=postgres dbname=postgres connect_timeout=5"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(query)

    def wait_for(self, condition, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            exited = self.proc.poll()
            if exited is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace")[-4000:]
                pytest.fail(f"control: {what} did not happen (postgres exit code {exited}):\n{log}")
            time.sleep(0.1)


def test_twin_control_plain_start_of_the_hostile_pgdata_fires_canaries(hostile, workroot):
    hostile.reset_canaries()
    before, conns = store_listing(hostile.repo), hostile.listener.count
    with PlainServer(hostile, workroot / "hostile" / "control") as plain:
        # standby.signal + primary_conninfo: once the archive is exhausted it follows "production"
        plain.wait_for(lambda: hostile.listener.count > conns, "a connection to primary_conninfo")
        # archive_mode=always: every restored segment goes through archive_command again
        plain.wait_for(lambda: "archive_command.auto" in hostile.fired(), "archive_command")
        plain.sql("checkpoint")  # a restartpoint, after the replayed CHECKPOINT record
        plain.wait_for(lambda: "archive_cleanup_command.auto" in hostile.fired(), "archive_cleanup_command")
        plain.sql("select pg_promote()")
        plain.wait_for(lambda: "recovery_end_command.auto" in hostile.fired(), "recovery_end_command")
    assert hostile.fired() == ["archive_cleanup_command.auto", "archive_command.auto",
                               "recovery_end_command.auto", "restore_command.auto"]  # fmt: skip
    assert store_listing(hostile.repo) == before
