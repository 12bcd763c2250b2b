"""A hostile backup cannot reach past its run dir, nor leave a process behind (issue 18).

The source is a real PostgreSQL 15 whose backup carries the traps of issue 18, armed only in a
restored copy (its PGDATA is ``…/r-<run>/pgdata``), never on the source:

* ``app.trap_body(tag)`` — plpgsql written by the non-superuser production role ``app``: it starts
  ``setsid sleep <tag>`` (a process that leaves its process group) with ``COPY … TO PROGRAM``,
  then goes for what the harness acts on: writes ``supervisor.pid``, ``sock.link`` and ``keep``
  in the run dir, links ``password`` to a canary, and signals the supervisor and the harness;
* a view over it (``app.v_app``), reached by a drill that counts rows;
* ``public.sd_trap(tag)``, SECURITY DEFINER owned by the superuser: it runs as superuser whoever
  calls it;
* an expression index (``app.t_idx``) whose function calls ``sd_trap``, reached by ANALYZE and by
  amcheck's ``bt_index_check(…, heapallindexed)`` (both switch to the table's owner).

Each trap fires for real (its ``sleep`` is seen running), and then: the files the harness acts on
are as the harness wrote them, the canary outside the run dir is untouched, and no process
outlives teardown — also after SIGKILL of the harness, and (in a PID namespace) of the supervisor.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from it_support import our_postgres_processes, wait_for

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

TRAP_SQL = """
CREATE ROLE app LOGIN;
CREATE SCHEMA app AUTHORIZATION app;
SET ROLE app;
CREATE FUNCTION app.trap_body(tag text) RETURNS int LANGUAGE plpgsql AS $f$
DECLARE
  run text := regexp_replace(current_setting('data_directory'), '/pgdata$', '');
  canary text := {canary!r};
BEGIN
  IF current_setting('data_directory') !~ '/r-[^/]+/pgdata$' THEN RETURN 0; END IF;  -- the source
  EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',
                 'cat >/dev/null; setsid sh -c "exec sleep ' || tag || '" </dev/null >/dev/null 2>&1 &');
  BEGIN EXECUTE format('COPY (SELECT 1) TO %L', run || '/supervisor.pid');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'supervisor.pid: %', SQLERRM; END;
  BEGIN EXECUTE format('COPY (SELECT %L) TO %L', canary, run || '/sock.link');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'sock.link: %', SQLERRM; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO %L', run || '/keep');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'keep: %', SQLERRM; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat >/dev/null; ln -s ' || canary || '/file ' || run || '/password');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'password: %', SQLERRM; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat >/dev/null; kill -9 $(cat ' || run || '/supervisor.pid)');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'kill supervisor: %', SQLERRM; END;
  BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat >/dev/null; kill -9 $(cat ' || run || '/harness.pid)');
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'kill harness: %', SQLERRM; END;
  RETURN 1;
END $f$;
CREATE TABLE app.app_t(i int);
INSERT INTO app.app_t VALUES (1);
CREATE VIEW app.v_app AS SELECT app.trap_body('7771') AS x FROM app.app_t;
RESET ROLE;
CREATE FUNCTION public.sd_trap(tag text) RETURNS int LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT app.trap_body(tag) $$;
SET ROLE app;
CREATE FUNCTION app.idx_fn(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
  AS $$ BEGIN PERFORM public.sd_trap(i::text); RETURN i; END $$;
CREATE TABLE app.t_idx(i int);
INSERT INTO app.t_idx VALUES (7773);
CREATE INDEX t_idx_expr ON app.t_idx ((app.idx_fn(i)));
RESET ROLE;
"""


def sleepers(tag: str) -> list[int]:
    """The processes a trap started: ``sleep <tag>``."""
    want = b"sleep\0" + tag.encode() + b"\0"
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/cmdline").read_bytes() == want:
                found.append(int(pid))
        except OSError:
            continue
    return found


def canary_state(canary: Path) -> tuple:
    st = (canary / "file").stat()
    return (canary / "file").read_text(), stat.S_IMODE(st.st_mode), st.st_uid, sorted(os.listdir(canary))


@pytest.fixture(scope="module")
def hostile(workroot):
    """(repo, canary): the hostile backup, and a root-owned 0700 directory outside every run dir."""
    root = workroot / "containment-hostile"
    root.mkdir()
    canary = root / "canary"
    canary.mkdir(mode=0o700)
    (canary / "file").write_text("root's own\n")
    (canary / "file").chmod(0o600)
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        with src.connect() as conn:
            conn.execute(TRAP_SQL.replace("{canary!r}", "'" + str(canary) + "'"))
        src.commit_rows(1)
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo", canary


def test_every_trap_fires_yet_nothing_outside_the_run_dir_changes_and_nothing_outlives_teardown(
        hostile, settings_factory):
    repo, canary = hostile
    before = canary_state(canary)
    tags = ["7771", "7772", "7773", "7774"]
    with Restorer(settings_factory(f"file://{repo}")).restore() as inst:
        run_dir = inst.run_dir
        written = {name: (run_dir / name).read_bytes() for name in ("supervisor.pid", "run.json", "harness.pid")}
        # the default drill role is no superuser: the invoker's function behind the view is refused
        with psycopg.connect(inst.dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select count(*) from app.v_app")
            assert sleepers("7771") == []
            # the SECURITY DEFINER function runs as superuser whoever calls it
            assert conn.execute("select public.sd_trap('7772')").fetchone()[0] == 1
        # a drill that asks for the superuser explicitly runs the view's function as superuser
        with psycopg.connect(inst.dsn_for(user="postgres"), autocommit=True) as conn:
            assert conn.execute("select count(*) from app.v_app").fetchone()[0] == 1
        # ANALYZE and amcheck evaluate the index expression as the table's owner
        with inst.admin_connect(autocommit=True) as conn:
            conn.execute("ANALYZE app.t_idx")
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            conn.execute("UPDATE app.t_idx SET i = 7774")
            conn.execute("select bt_index_check('app.t_idx_expr'::regclass, true)")
        for tag in tags:  # premise: every trap really ran code as the server's OS user
            assert wait_for(lambda tag=tag: sleepers(tag), 5), f"trap {tag} did not fire"
        for name, content in written.items():
            assert (run_dir / name).read_bytes() == content, f"{name} was rewritten by the copy"
            assert (run_dir / name).stat().st_uid == os.geteuid()
        for name in ("keep", "sock.link", "password"):
            assert not os.path.lexists(run_dir / name), f"the copy planted {name} in the run dir"
        assert inst.server.poll() is None, "the copy killed its supervisor"
        assert canary_state(canary) == before
    for tag in tags:
        assert sleepers(tag) == [], f"trap {tag}'s process outlived teardown"
    assert not run_dir.exists()
    assert canary_state(canary) == before


HARNESS = """
import sys, time
from pathlib import Path
import psycopg
import pytest_pgrestore.runtimes._local as local
from pytest_pgrestore.settings._options import resolve_settings
from pytest_pgrestore.restore._restorer import Restorer

local.NAMESPACES = sys.argv[4] == "ns"
settings = resolve_settings(cli={"source": sys.argv[1], "workdir": sys.argv[2]}, env={}, ini={})
with Restorer(settings).restore() as inst:
    with psycopg.connect(inst.dsn, autocommit=True) as conn:
        conn.execute("select public.sd_trap(%s)", (sys.argv[5],))
    Path(sys.argv[3]).write_text(str(inst.run_dir))
    time.sleep(600)
"""


def run_harness(repo: Path, workroot: Path, mode: str, tag: str):
    workdir, ready = workroot / f"contain-{mode}-{tag}", workroot / f"contain-ready-{mode}-{tag}"
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, f"file://{repo}", str(workdir), str(ready), mode, tag])
    assert wait_for(ready.exists, 90), "premise: the restore came up"
    run_dir = Path(ready.read_text())
    assert (run_dir / "containment").read_text().strip() == ("pid-namespace" if mode == "ns" else "subreaper")
    assert wait_for(lambda: sleepers(tag), 5), "premise: the trap fired"
    return harness, run_dir


@pytest.mark.parametrize("mode", ["ns", "subreaper"])
def test_sigkill_of_the_harness_ends_every_process_the_copy_started(hostile, workroot, mode):
    repo, canary = hostile
    before = canary_state(canary)
    tag = "7775" if mode == "ns" else "7776"
    harness, run_dir = run_harness(repo, workroot, mode, tag)
    try:
        harness.kill()
        harness.wait(10)
        assert wait_for(lambda: not sleepers(tag), 45), f"setsid sleep {tag} outlived the killed harness"
        assert wait_for(lambda: not run_dir.exists(), 10), "the supervisor left the run dir"
        assert our_postgres_processes(workroot) == []
        assert canary_state(canary) == before
    finally:
        harness.kill()
        for pid in sleepers(tag):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", ["ns", "subreaper"])
def test_sigkill_of_harness_and_supervisor_a_namespace_still_ends_everything(hostile, workroot, mode):
    """The twin that shows what the namespace adds: with the supervisor itself SIGKILLed, the
    kernel ends the namespace; the subreaper fallback leaves a setsid process behind."""
    repo, _canary = hostile
    tag = "7777" if mode == "ns" else "7778"
    harness, run_dir = run_harness(repo, workroot, mode, tag)
    try:
        supervisor = int((run_dir / "supervisor.pid").read_text())
        os.kill(supervisor, signal.SIGKILL)
        harness.kill()
        harness.wait(10)
        gone = wait_for(lambda: not sleepers(tag), 5)
        if mode == "ns":
            assert gone, f"setsid sleep {tag} outlived the namespace's end"
        else:
            assert not gone, "premise of the twin: without a namespace the setsid process survives"
    finally:
        harness.kill()
        for pid in sleepers(tag):
            os.kill(pid, signal.SIGKILL)
        from pytest_pgrestore.restore._rundir import sweep_stale

        sweep_stale(run_dir.parent)
