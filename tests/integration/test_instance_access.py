"""How drills reach a restored server: per-run passwords under concurrency, and connect strings
for role and database names that are not plain words (issue 16, items 1 and 5).

One real restore of the PostgreSQL 15 scenario serves the module.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from pytest_pgrestore.restore._instance import RestoredInstance
from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.settings._options import resolve_settings

ROLES = [f"drill_role_{i}" for i in range(12)]
#: a space, an equals sign, a single and a double quote, a backslash: each must stay one name
ODD_NAMES = ["drill user", "a=b", "it's", 'say "hi"', "back\\slash", "host=evil port=1"]


@pytest.fixture(scope="module")
def restored(pg15, workroot):
    settings = resolve_settings(cli={"source": f"file://{pg15.repo}", "workdir": str(workroot / "runs")},
                                env={}, ini={})
    with Restorer(settings).restore() as inst:
        with inst.admin_connect("postgres", autocommit=True) as conn:
            for name in ROLES + ODD_NAMES:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
            for name in ODD_NAMES:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
        yield inst


def _worker_view(inst: RestoredInstance, seed: str) -> RestoredInstance:
    """What an xdist worker holds: the same server, its own (empty) password cache."""
    return replace(inst, _passwords={}, password_seed=seed)


def _stampede(inst: RestoredInstance, seeds: list[str], rounds: int) -> list[str]:
    """``len(seeds)`` workers open every role's connect string at the same moment, ``rounds``
    times over; returns what went wrong."""
    errors: list[str] = []
    for round_ in range(rounds):
        views = [_worker_view(inst, seed + str(round_)) for seed in seeds]
        barrier = threading.Barrier(len(views))

        def drill(view: RestoredInstance, barrier: threading.Barrier = barrier, round_: int = round_) -> None:
            barrier.wait()
            try:
                dsns = [view.dsn] + [view.dsn_for(user=role) for role in ROLES]
                for dsn in dsns:  # every worker's password works: none was overwritten by another
                    psycopg.connect(dsn).close()
            except psycopg.Error as exc:
                errors.append(f"round {round_}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=drill, args=(view,)) for view in views]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return errors


def test_four_workers_settle_passwords_at_once_without_a_collision(restored):
    """Each worker sets every role's derived password on first use: the same value, one at a time."""
    errors = _stampede(restored, ["shared-seed"] * 4, rounds=20)
    assert errors == []


def test_twin_workers_that_do_not_share_the_seed_lock_each_other_out(restored):
    """The stampede can fail: workers deriving different passwords overwrite each other's."""
    errors = _stampede(restored, [f"seed-{n}" for n in range(4)], rounds=2)
    assert errors and all("password authentication failed" in e for e in errors), errors


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_role_and_database_name_with_spaces_equals_or_quotes_is_one_name(restored, name):
    with psycopg.connect(restored.dsn_for(user=name, dbname=name)) as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == (name, name)


def test_twin_the_name_reaches_the_server_whole_when_it_is_wrong(restored):
    """No database "a=b x" exists: the server names it whole (not "a", nor a second keyword)."""
    with pytest.raises(psycopg.OperationalError, match='database "a=b x" does not exist'):
        psycopg.connect(restored.dsn_for(user="a=b", dbname="a=b x")).close()


def test_the_copy_runs_no_autovacuum(restored):
    """Quarantine: autovacuum is off on the command line, whatever production's files say."""
    with psycopg.connect(restored.dsn) as conn:
        assert conn.execute("show autovacuum").fetchone()[0] == "off"
