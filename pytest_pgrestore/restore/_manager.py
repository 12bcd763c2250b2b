"""Restores shared by a whole run: each (source, target, format) is restored once.

Usable without pytest: the plugin keeps one :class:`RestoreManager` per session, and so can any
other driver.  A failed restore is remembered, so every drill that depends on it fails at once
with the same error instead of restoring again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Protocol

from ..settings._options import Settings
from ._instance import Hooks, RestoredInstance
from ._restorer import Restorer
from ._result import RestoreResult

log = logging.getLogger(__name__)

__all__ = ["RestoreKey", "RestoreManager", "TEMPLATE_PREFIX"]

TEMPLATE_PREFIX = "pgrestore_tpl_"


@dataclass(frozen=True)
class RestoreKey:
    """What makes two restores the same restore: drills that agree on it share one server."""

    source: str
    target: str
    format: str
    user: str = "postgres"  # the role the instance's dsn logs in as
    dbname: str = "postgres"  # the database it connects to (checked to exist after promotion)
    preload: tuple[str, ...] = ()  # shared_preload_libraries kept: a different server
    drill_role: bool = False  # drills connect as the least-privilege drill role, not as ``user``

    @property
    def label(self) -> str:
        extra = f";preload={','.join(self.preload)}" if self.preload else ""
        return f"restore[{self.target}{extra}]"

    @property
    def digest(self) -> str:
        """A stable id of the whole key (file names of the xdist share)."""
        from hashlib import sha256

        text = "\0".join([self.source, self.target, self.format, self.user, self.dbname, *self.preload,
                          *(["drill_role"] if self.drill_role else [])])
        return sha256(text.encode()).hexdigest()[:24]


class Share(Protocol):
    """Restores shared between processes (the plugin's xdist_share.SharedRestores)."""

    def applies(self, settings: Settings) -> bool: ...

    def ensure(self, settings: Settings, restore_here: Callable[[], RestoredInstance]) -> RestoredInstance: ...


def key_for(settings: Settings) -> RestoreKey:
    source = settings.source.describe() if settings.source else "<no source>"
    return RestoreKey(source, str(settings.target), settings.format, user=settings.user,
                      dbname=settings.dbname, preload=tuple(settings.preload),
                      drill_role=settings.drill_role_default)


class RestoreManager:
    def __init__(self) -> None:
        self._stack = ExitStack()
        self._done: dict[RestoreKey, RestoredInstance | BaseException] = {}
        self.settings_for: dict[RestoreKey, Settings] = {}
        self.results: dict[RestoreKey, RestoreResult] = {}
        self.want_template = False
        self._clones = 0
        self.share: Share | None = None  # a SharedRestores on an xdist worker (xdist_share.register)

    def ensure(self, settings: Settings, *, hooks: Hooks | None = None) -> RestoredInstance:
        """The restored instance for ``settings``; restores on first use, re-raises a failure."""
        key = key_for(settings)
        if key not in self._done:
            self.settings_for[key] = settings
            try:
                inst = self._restore(settings, hooks)
                self._done[key] = inst
                self.results[key] = inst.result
            except Exception as exc:  # remembered: every drill of this restore fails with it, none retries
                self._done[key] = exc
                result = getattr(exc, "result", None)
                if result is not None:
                    self.results[key] = result
        done = self._done[key]
        if isinstance(done, BaseException):
            raise done
        return done

    def _restore(self, settings: Settings, hooks: Hooks | None) -> RestoredInstance:
        if self.share is not None and self.share.applies(settings):  # xdist: one restore for all workers
            return self.share.ensure(settings, lambda: self._restore_for_all(settings, hooks))
        inst = self._stack.enter_context(Restorer(settings, hooks=hooks).restore())
        if self.want_template:
            make_template(inst)
        inst.result.evidence.setdefault("sharing", {"mode": "one process", "restores": 1})
        return inst

    def _restore_for_all(self, settings: Settings, hooks: Hooks | None) -> RestoredInstance:
        """The server is handed over to the xdist controller, which stops it at session finish."""
        with Restorer(settings, hooks=hooks).restore(handover=True) as inst:
            if self.want_template:
                make_template(inst)
        return inst

    def instance(self, key: RestoreKey) -> RestoredInstance | None:
        """The restored instance of ``key`` when that restore succeeded (even after close(), if kept)."""
        done = self._done.get(key)
        return done if isinstance(done, RestoredInstance) else None

    def failure(self, settings: Settings) -> BaseException | None:
        done = self._done.get(key_for(settings))
        return done if isinstance(done, BaseException) else None

    def clone_db(self, inst: RestoredInstance) -> str:
        """A fresh database copied from the untouched template; the caller drops it."""
        from psycopg import sql

        make_template(inst)
        self._clones += 1
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # workers may share the server
        name = f"pgrestore_clone_{worker + '_' if worker else ''}{self._clones}"
        with inst.admin_connect("template1", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_name(inst))))
        inst.grant_writes(name)  # the drill role writes in the clone only
        return name

    def drop_db(self, inst: RestoredInstance, name: str) -> None:
        from psycopg import sql

        with inst.admin_connect("template1", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        self._stack.close()


def template_name(inst: RestoredInstance) -> str:
    return f"{TEMPLATE_PREFIX}{inst.dbname}"[:63]


def make_template(inst: RestoredInstance) -> None:
    """Copy the drilled database right after promotion, before any drill can write to it."""
    from psycopg import sql

    name = template_name(inst)
    with inst.admin_connect("template1", autocommit=True) as conn:
        if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            return
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(inst.dbname)))
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
