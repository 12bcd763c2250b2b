"""pytest entry point: options, the ``restore_target`` marker, restore items and fixtures.

Everything here is a thin wrapper over :class:`~pytest_pgrestore.restore._manager.RestoreManager`;
the fixtures only enter a context and yield.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ..errors import PgRestoreError, UsageError
from ..restore._manager import RestoreManager, key_for
from ..settings._options import OPTIONS, resolve_settings
from ._items import (
    _MANAGER,
    _SETTINGS,
    _SIGTERM,
    MARKER,
    RESTORE_FIXTURES,
    NegativeControlItem,
    RestoreItem,
    preload_note,
    settings_for,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    from ..restore._progress import keep_terminal

    keep_terminal()  # before pytest captures output: progress lines reach the terminal during a restore
    group = parser.getgroup("pgrestore", "restore drills (pytest-pgrestore)")
    for spec in OPTIONS:
        default = spec.default_text()
        suffix = f" (default: {default}; env {spec.env_var}; ini {spec.ini_key})" if default else \
            f" (env {spec.env_var}; ini {spec.ini_key})"
        kwargs: dict[str, Any] = {"choices": spec.choices} if spec.choices else {}
        if spec.default in ("true", "false"):  # a switch: --restore-plan-only alone means true
            kwargs.update(nargs="?", const="true")
        if spec.const is not None:  # may stand alone: --restore-checks means all
            kwargs.update(nargs="?", const=spec.const)
        group.addoption(spec.cli_flag, dest=spec.dest, default=None, help=spec.help + suffix,
                        metavar=spec.name.upper(), **kwargs)
        parser.addini(spec.ini_key, spec.help, default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(target, *, source=None, format=None): restore this target (and source) "
        "for the marked test or module instead of --restore-target")
    try:
        settings = resolve_settings(cli={s.name: config.getoption(s.dest) for s in OPTIONS},
                                    ini={s.name: _ini(config, s.ini_key) for s in OPTIONS},
                                    env=dict(os.environ))
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_SETTINGS] = settings
    config.stash[_MANAGER] = RestoreManager()
    from ._xdist_share import register as share_restores

    share_restores(config, config.stash[_MANAGER], settings)  # under xdist: each restore once, for all workers
    from ..signals import interrupt_on_sigterm

    config.stash[_SIGTERM] = interrupt_on_sigterm()  # SIGTERM tears restores down as Ctrl-C does
    config.pluginmanager.import_plugin("pytest_pgrestore.pytest_plugin._checks")  # --restore-checks (issue 10)
    from ._report import register  # evidence, budgets, reports and alerts (issue 8)

    register(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    uninstall = config.stash.get(_SIGTERM, None)
    if uninstall is not None:
        uninstall()  # the previous SIGTERM handler is back


def _ini(config: pytest.Config, key: str) -> str | None:
    value = config.getini(key)
    return value if value not in (None, "", []) else None


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(_SETTINGS, None)
    if not settings:
        return []
    lines = settings.report_lines()
    if settings.runtime != "local":  # which runtime, and why (docker is imported only then)
        from ..runtimes._docker import runtime_report

        header = runtime_report(settings)  # None only for the local runtime
        if header is not None:
            lines.append(header)
    return [f"pgrestore: {line}" for line in lines]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    manager = config.stash[_MANAGER]
    seen: dict = {}
    out = []
    for item in items:
        if RESTORE_FIXTURES & set(getattr(item, "fixturenames", ())):
            settings = settings_for(item)
            if "restored_db_writable" in item.fixturenames:
                manager.want_template = True
            key = key_for(settings)
            if key not in seen:
                label = key.label.replace("restore[", "plan[", 1) if settings.plan_only else key.label
                seen[key] = RestoreItem.from_parent(item.parent, name=label, settings=settings)
                out.append(seen[key])
                if settings.negative_control and not settings.plan_only:
                    out.append(NegativeControlItem.from_parent(
                        item.parent, name=key.label.replace("restore[", "negative_control[", 1), settings=settings))
        out.append(item)
    items[:] = out


@pytest.hookimpl(trylast=True)  # after the runner's teardown: an interrupted drill still holds a connection
def pytest_sessionfinish(session: pytest.Session) -> None:
    manager = session.config.stash.get(_MANAGER, None)
    if manager is None:
        return
    try:
        manager.close()
    except Exception as exc:  # teardown trouble must not hide the drills' results
        import warnings

        warnings.warn(pytest.PytestWarning(f"pgrestore teardown: {exc}"), stacklevel=1)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    manager = config.stash.get(_MANAGER, None)
    if not manager or not manager.results:
        return
    tr = terminalreporter
    tr.section("restore drills")
    for key, result in manager.results.items():
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in result.phases.items())
        if result.outcome is not None and result.ok:
            tr.write_line(f"{key.label} {result.outcome}: backup {result.backup}, replay to {result.replay_lsn} "
                          f"on timeline {result.timeline}; {result.wal_segments} WAL segments; {phases}",
                          green=True)
        else:
            first = (result.detail or "").splitlines()[0] if result.detail else "no detail"
            where = f" (backup {result.backup})" if result.backup else ""
            tr.write_line(f"{key.label} {result.outcome or 'FAILED'}{where}: {first}", red=True)
        preload = preload_note(result)
        if preload:
            tr.write_line(f"  preload: {preload}")
        if result.evidence.get("kept"):
            tr.write_line(f"  KEPT on purpose: {result.evidence['kept']} holds a copy of production data; "
                          f"delete it when done", red=True)
            inst = manager.instance(key)
            if inst is not None:
                tr.write_line(f"  connect: psql -h {inst.socket_dir} -p {inst.port} -U {inst.user} {inst.dbname}"
                              f"; stop: kill -INT $(cat {result.evidence['kept']}/supervisor.pid)")


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def restore_manager(pytestconfig: pytest.Config) -> RestoreManager:
    """The session's restores (override point)."""
    return pytestconfig.stash[_MANAGER]


@pytest.fixture
def restored_postgres(request: pytest.FixtureRequest, restore_manager: RestoreManager):
    """The running restored server: ``dsn``, ``host``, ``port``, ``version``, ``result``."""
    settings = settings_for(request.node)
    if settings.plan_only:
        pytest.skip("--restore-plan-only: restores are planned, not run")
    try:
        return restore_manager.ensure(settings)
    except Exception as exc:  # the manager remembers every failure of a restore
        failure = exc
    # Outside the except block: a chained __context__ would repeat the restore item's whole message.
    outcome = getattr(getattr(failure, "result", None), "outcome", None)
    pytest.fail(f"{key_for(settings).label} failed{f' ({outcome})' if outcome else ''}: "
                f"{str(failure).splitlines()[0]}", pytrace=False)


@pytest.fixture
def restore_result(restored_postgres):
    """Backup, target, outcome, LSNs, timeline, phase timings, bytes and segments."""
    return restored_postgres.result


@pytest.fixture
def restored_db(restored_postgres):
    """A read-only psycopg connection to the restored database, rolled back after the test."""
    import psycopg

    conn = psycopg.connect(restored_postgres.dsn, options="-c default_transaction_read_only=on")
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def restored_db_writable(restored_postgres, restore_manager: RestoreManager):
    """A connection to a per-test copy of the database, cloned from an untouched template."""
    import psycopg

    name = restore_manager.clone_db(restored_postgres)
    conn = psycopg.connect(restored_postgres.dsn_for(dbname=name))
    try:
        yield conn
    finally:
        conn.close()
        restore_manager.drop_db(restored_postgres, name)


@pytest.fixture(scope="session")
def backup_catalog(pytestconfig: pytest.Config):
    """Backups and WAL archive of ``--restore-source`` (no download)."""
    from ..restore._restorer import Restorer

    try:
        return Restorer(pytestconfig.stash[_SETTINGS]).catalog()
    except PgRestoreError as exc:
        pytest.fail(f"backup catalog: {exc}", pytrace=False)


@pytest.fixture
def restore_factory(request: pytest.FixtureRequest, restore_manager: RestoreManager):
    """``restore_factory("lsn:0/3000148", source=…)`` → another restored instance (cached per run)."""
    base = settings_for(request.node)

    def restore(target: str | None = None, **overrides):
        if target is not None:
            overrides["target"] = target
        try:
            return restore_manager.ensure(base.replace("keyword restore_factory", **overrides))
        except UsageError as exc:
            raise pytest.UsageError(str(exc)) from None

    return restore
