"""``--restore-checks``: the built-in checks as test items, one per expectation.

Registered by plugin.py.  Where the checks come from:

* a ``pyproject.toml`` with a ``[tool.pgrestore]`` table, collected where pytest finds it (a
  drills folder's own) or, when it is the ini file, added in front of the run.  It runs against
  the run's restore (``--restore-target``), with corruption and hygiene checks at their defaults
  when the file does not configure them;
* a drill module's ``PGRESTORE = {...}`` (same keys): its checks run against that module's restore,
  so a ``restore_target`` marker applies to them;
* neither: the corruption and hygiene checks at their defaults, under the node ``pgrestore``.

Items that need the restored server carry ``fixturenames = ("restored_postgres",)``: plugin.py's
collection hook then places the ``restore[...]`` item before them, as for any drill.
``pg_checksums`` (a stop and restart of the server) moves to the end of the run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from ..checks import assertions as a
from ..checks._expectations import Check, load_pyproject, parse_declaration
from ..errors import CheckSkipped, PgRestoreError
from ..restore._manager import key_for
from ._items import _MANAGER, _SETTINGS, settings_for

MODULE_ATTR = "PGRESTORE"
_FILES = pytest.StashKey[set]()  # pyproject.toml files collected this run
_LISTINGS = pytest.StashKey[dict]()  # RestoreKey → (store, catalog) for the hygiene checks


def _families(config: pytest.Config) -> tuple[str, ...]:
    settings = config.stash.get(_SETTINGS, None)
    return getattr(settings, "checks", ()) if settings is not None else ()


# -- collection ---------------------------------------------------------------------------
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if file_path.name == "pyproject.toml" and _families(parent.config):
        try:
            declares = "pgrestore" in file_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if declares:
            return ChecksFile.from_parent(parent, path=file_path)
    return None


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object):
    if name == MODULE_ATTR and isinstance(collector, pytest.Module) and _families(collector.config):
        origin = f"{collector.nodeid} {MODULE_ATTR}"
        return Declaration.from_parent(collector, name=MODULE_ATTR, data=obj, origin=origin, defaults=False)
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """Next to the session's own children: the ini file's table when pytest would not collect it
    (``pytest drills/``), and the defaults, which stand back when anything was declared."""
    report = yield
    config = collector.config
    if isinstance(collector, pytest.Session) and report.passed and _families(config):
        ini = config.inipath
        if ini is not None and ini.name == "pyproject.toml" and not _under_args(config, ini):
            report.result.insert(0, ChecksFile.from_parent(collector, path=ini))
        report.result.append(Declaration.from_parent(
            collector, name="pgrestore", nodeid="pgrestore", path=config.rootpath / "pgrestore",
            data={}, origin="defaults", defaults=True, fallback=True))
    return report


def _under_args(config: pytest.Config, path: Path) -> bool:
    """Will pytest collect ``path`` itself (it is, or lies under, one of the run's paths)?"""
    for arg in config.args:
        target = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if target == path or (target.is_dir() and path.is_relative_to(target)):
            return True
    return False


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    last = [i for i in items if isinstance(i, RestoredCheckItem) and i.check.kind == "pg_checksums"]
    if last:  # it stops and restarts the server: after every drill of the run
        items[:] = [i for i in items if i not in last] + last


def _own_error(excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """Our errors are shown as their message, without a traceback."""
    return str(excinfo.value) if isinstance(excinfo.value, PgRestoreError) else None


class _ReportsOwnErrors(pytest.Collector):
    def repr_failure(self, excinfo, style=None):  # Collector's own takes no style: not passed on
        own = _own_error(excinfo)
        return own if own is not None else super().repr_failure(excinfo)


class Declaration(_ReportsOwnErrors):
    """One declaration: a module's ``PGRESTORE``, or the defaults (``fallback``: only when nothing
    was declared anywhere; collected last, so it knows)."""

    def __init__(self, *, data, origin: str, defaults: bool, fallback: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data, self.origin, self.defaults, self.fallback = data, origin, defaults, fallback

    def collect(self):
        if self.fallback and self.config.stash.get(_FILES, None):
            return []
        checks = parse_declaration(self.data, origin=self.origin, families=_families(self.config),
                                   defaults=self.defaults)
        return [_item_class(c).from_parent(self, name=c.name, check=c) for c in checks]


class ChecksFile(_ReportsOwnErrors, pytest.File):
    """A ``pyproject.toml`` holding ``[tool.pgrestore]``."""

    def collect(self):
        table = load_pyproject(self.path)
        if table is None:
            return []
        self.config.stash.setdefault(_FILES, set()).add(self.path)  # the defaults stand back
        checks = parse_declaration(table, origin=f"{self.nodeid} [tool.pgrestore]", families=_families(self.config),
                                   defaults=True)
        return [_item_class(c).from_parent(self, name=c.name, check=c) for c in checks]


def _item_class(check: Check) -> type[CheckItem]:
    return HygieneItem if check.family == "hygiene" else RestoredCheckItem


# -- items --------------------------------------------------------------------------------
class CheckItem(pytest.Item):
    def __init__(self, *, check: Check, **kwargs) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.user_properties.append(("pgrestore_check", f"{check.family}: {check.origin}"))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, AssertionError):
            return str(excinfo.value)
        own = _own_error(excinfo)
        return own if own is not None else super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"{self.name} ({self.check.origin})"

    def _skip(self, exc: CheckSkipped):
        # reported at the declaration (drills/pyproject.toml), not at the line of this module that skips
        return pytest.skip.Exception(exc.what, _use_item_location=True)

    def _passed(self, detail: str) -> None:
        self.user_properties.append(("pgrestore_detail", detail))


class RestoredCheckItem(CheckItem):
    """An expectation or corruption check on the restored server."""

    fixturenames = ("restored_postgres",)  # so plugin.py puts the restore item before this one

    def setup(self) -> None:  # as the restored_postgres fixture does
        self.settings = settings_for(self)
        if getattr(self.settings, "plan_only", False):
            pytest.skip("--restore-plan-only: restores are planned, not run")
        try:
            self.instance = self.config.stash[_MANAGER].ensure(self.settings)
            return
        except Exception as exc:  # the manager remembers every failure; the restore item shows it whole
            failure = exc
        outcome = getattr(getattr(failure, "result", None), "outcome", None)
        pytest.fail(f"{key_for(self.settings).label} failed{f' ({outcome})' if outcome else ''}: "
                    f"{str(failure).splitlines()[0]}", pytrace=False)

    def runtest(self) -> None:
        try:
            if self.check.family == "corruption":
                self._corruption()
            else:
                self._expectation()
        except CheckSkipped as exc:
            raise self._skip(exc) from None

    def _expectation(self) -> None:
        import psycopg

        p = self.check.params
        with psycopg.connect(self.instance.dsn, autocommit=True,
                             options="-c default_transaction_read_only=on") as conn:
            kind = self.check.kind
            if kind == "fresh":
                reference, label = _reference(self.settings, self.instance.result)
                newest = a.assert_fresh(conn, p["table"], p["column"], within=p["within"], reference=reference,
                                        reference_label=label)
                return self._passed(f"newest {p['table']}.{p['column']} {newest.isoformat()} ({label} "
                                    f"{reference.isoformat()})")
            if kind == "key_row" and "sql" in p:
                return a.assert_query_returns_rows(conn, p["sql"])
            if kind == "key_row":
                way = {k: v for k, v in p.items() if k in ("pk", "where")}
                return a.assert_row_exists(conn, p["table"], **way, **dict(p.get("match", {})))
            if kind == "rows":
                n = a.assert_row_count(conn, p["table"], at_least=p.get("at_least"), exactly=p.get("exactly"))
                return self._passed(f"{n} rows")
            {"table": a.assert_tables_exist, "extension": a.assert_extensions_installed,
             "database": a.assert_databases_exist, "schema": a.assert_schemas_exist}[kind](conn, p["name"])

    def _corruption(self) -> None:
        from ..checks import _corruption as corruption

        p, inst = self.check.params, self.instance
        report = {
            "amcheck_btree": lambda: corruption.amcheck_btree(inst, databases=p["databases"],
                                                              heapallindexed_max=p["heapallindexed_max"]),
            "amcheck_heap": lambda: corruption.amcheck_heap(inst, databases=p["databases"]),
            "full_read": lambda: corruption.full_read(inst, databases=p["databases"]),
            "pg_checksums": lambda: corruption.verify_checksums(inst, timeout=self.settings.timeout),
        }[self.check.kind]()
        if not report.ok:
            raise AssertionError(report.summary())
        self._passed(report.summary())


def _reference(settings, result) -> tuple[datetime, str]:
    """What "fresh" is measured against: the target time, else the last replayed transaction."""
    target = settings.target
    if target.kind == "time":
        return target.stop_time, f"the restore target {target}"
    if result.last_replay_time:
        return datetime.fromisoformat(result.last_replay_time), "the last transaction replayed"
    if result.backup_stop_time:
        return datetime.fromisoformat(result.backup_stop_time), f"the end of backup {result.backup}"
    return datetime.now(timezone.utc), "now"


class HygieneItem(CheckItem):
    """A check of the backup store: listings and bucket settings, no restore."""

    def runtest(self) -> None:
        from ..checks import _hygiene as h

        settings = settings_for(self)
        store, catalog = _listing(self.config, settings, self.nodeid)
        p = self.check.params
        checks = {
            "bucket_encryption": lambda: h.bucket_encryption(store, p["level"]),
            "object_encryption": lambda: h.object_encryption(store, catalog, p["level"]),
            "client_side_encryption": lambda: h.client_side_encryption(catalog),
            "public_access_block": lambda: h.public_access_block(store),
            "bucket_policy": lambda: h.bucket_policy(store),
            "backup_count": lambda: h.backup_count(catalog, p["min_backups"]),
            "backup_age": lambda: h.backup_age(catalog, p["max_age"]),
            "wal_continuity": lambda: h.wal_continuity_check(catalog),
        }
        try:
            verdict = checks[self.check.kind]()
        except CheckSkipped as exc:
            raise self._skip(exc) from None
        if not verdict.ok:
            raise AssertionError(verdict.detail)
        self._passed(verdict.detail)


def _listing(config: pytest.Config, settings, nodeid: str):
    """(store, catalog) of the settings' source, listed once per run; a failure is shown in full
    by the first item and named by the others."""
    from ..restore._restorer import Restorer

    cache = config.stash.setdefault(_LISTINGS, {})
    key = key_for(settings).source, settings.format
    if key not in cache:
        try:
            restorer = Restorer(settings)
            cache[key] = (restorer.store(), restorer.catalog())
        except PgRestoreError as exc:
            cache[key] = (exc, nodeid)
    first, second = cache[key]
    if isinstance(first, PgRestoreError):
        if second == nodeid:
            raise first
        raise PgRestoreError(f"{first.what} (in full at {second})")
    return first, second


def pytest_sessionfinish(session: pytest.Session) -> None:
    for store, _catalog in session.config.stash.get(_LISTINGS, {}).values():
        if not isinstance(store, PgRestoreError):
            store.close()
