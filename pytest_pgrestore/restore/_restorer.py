"""The library API every surface (plugin, CLI, benchmarks) stands on.

    with Restorer(settings).restore(RestoreTarget.parse("2026-11-20T12:00:00Z")) as inst:
        inst.dsn, inst.result

Flow: source → store → catalog → plan (pre-flight) → binaries → fetch → verify → quarantine →
spool + server → watch → verdict.  Nothing is left running or on disk when the block exits,
unless ``keep`` says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BinariesNotFound, PreflightError, RestoreFailed
from ..formats._catalog import Catalog
from ..settings._target import RestoreTarget
from ._attempt import RestoreAttempt
from ._instance import Hooks, RestoredInstance
from ._plan import Plan, make_plan
from ._result import Outcome, RestoreResult

if TYPE_CHECKING:
    from ..formats._base import BackupFormat
    from ..store import ObjectStore

log = logging.getLogger(__name__)

__all__ = ["Restorer", "RestoredInstance", "Hooks"]


class Restorer:
    def __init__(self, settings, *, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.hooks = hooks or Hooks()
        self._store: ObjectStore | None = None
        self._format: BackupFormat | None = None

    # -- listing-only steps ---------------------------------------------------------------
    def store(self) -> ObjectStore:
        if self._store is None:
            from ..store import open_store

            self._store = open_store(self.settings.require_source(), env=self.settings.env)
        return self._store

    def format(self) -> BackupFormat:
        if self._format is None:
            from ..formats import get_format

            self._format = get_format(self.store(), self.settings.format, env=self.settings.env,
                                      selector=self.settings.require_source().selector,
                                      concurrency=self.settings.fetch_concurrency)
        return self._format

    def catalog(self) -> Catalog:
        return self.format().catalog()

    def plan(self, target: RestoreTarget | None = None) -> Plan:
        return make_plan(self.catalog(), target or self.settings.target, timeline=self.settings.timeline,
                         inclusive=self.settings.target_inclusive)

    # -- the restore ----------------------------------------------------------------------
    @contextmanager
    def restore(self, target: RestoreTarget | None = None, *, pgdata=None, port: int | None = None,
                keep_running: bool = False, handover: bool = False) -> Iterator[RestoredInstance]:
        """Restore ``target``; ``pgdata``/``port`` place a manual restore, ``keep_running`` leaves
        the server up (and its run dir) when the block exits.  ``handover``: the server and its
        run dir pass to whoever owns the run (:func:`~pytest_pgrestore.restore._owner.owned_by`) — the
        xdist controller stops a restore shared by the workers."""
        target = target or self.settings.target
        result = RestoreResult(source=self.settings.require_source().describe(), format=self.settings.format,
                               target=str(target))
        clock = _Phases(result)
        with clock("catalog"):
            catalog = self.catalog()
        result.format = catalog.format
        if catalog.selector and not self.settings.require_source().selector:  # picked: the only one
            result.source += f"?{getattr(self.format(), 'SELECTOR', 'selector')}={catalog.selector}"
        with clock("plan"):
            try:
                plan = make_plan(catalog, target, timeline=self.settings.timeline,
                                 inclusive=self.settings.target_inclusive)
                self.format().check_complete(plan.backup)  # its index against the listing (issue 19)
                from ._diskcheck import check_restore_space

                result.evidence["disk_check"] = check_restore_space(
                    self.format(), catalog, plan, workdir=self.settings.workdir,
                    pgdata=Path(pgdata) if pgdata is not None else None,
                    concurrency=self.settings.fetch_concurrency)
            except PreflightError as exc:
                result.outcome, result.detail = getattr(exc, "outcome", Outcome.REFUSED_PREFLIGHT), str(exc)
                exc.result = result
                raise
        placement = {"pgdata": pgdata, "port": port}
        attempt = RestoreAttempt(self, catalog, plan, result, clock, **placement)
        while True:
            try:
                inst = attempt.run()
                break
            except BinariesNotFound as exc:  # known before any download: a refusal, with evidence
                result.outcome, result.detail = Outcome.REFUSED_PREFLIGHT, str(exc)
                exc.result = result
                raise
            except RestoreFailed as exc:
                nxt = attempt.retry_plan(exc)
                if nxt is None:
                    raise
                attempt = RestoreAttempt(self, catalog, nxt, result, clock, **placement)
        try:
            from ..checks._storecheck import record_store_untouched

            record_store_untouched(self.format(), inst)  # evidence: the copy wrote nothing to the store
            yield inst
        finally:
            if handover:
                attempt.release()
            else:
                attempt.finish(failed=False, keep_running=keep_running)


class _Phases:
    """Consecutive timed phases on the critical path: each phase runs from the previous phase's
    end to its own, so the phases add up to the total exactly (no untimed gaps between them).

    ``recover`` is split at the moment recovery reached a consistent state (the server log's
    "consistent recovery state reached" line) into ``start_to_consistent`` and
    ``consistent_to_target``; ``relist`` and the first query after promotion make up
    ``target_to_first_query``.  ``first_query()`` closes the clock: RTO is its total.
    """

    NAMES = {"relist": "target_to_first_query"}

    def __init__(self, result: RestoreResult) -> None:
        self.result = result
        self.t0 = time.monotonic()
        self.wall0 = time.time()  # the same instant on the wall clock (log lines carry wall time)
        self.boundary = self.t0
        result.started_at = _iso(self.wall0)

    @contextmanager
    def __call__(self, name: str, *, log_file=None):
        try:
            yield
        finally:
            start, end = self.boundary, time.monotonic()
            if name == "recover":
                from ._measure import consistent_at

                at, how = consistent_at(log_file, start=start, end=end, wall0=self.wall0, t0=self.t0)
                self._add("start_to_consistent", at - start)
                self._add("consistent_to_target", end - at)
                self.result.evidence["consistent_from"] = how
            else:
                self._add(self.NAMES.get(name, name), end - start)
            self.boundary = end

    def first_query(self) -> float:
        """Close the clock at the first successful query: RTO = that moment - start."""
        now = time.monotonic()
        self._add("target_to_first_query", now - self.boundary)
        self.boundary = now
        self.result.first_query_at = _iso(self.wall0 + (now - self.t0))
        self.result.rto_seconds = round(now - self.t0, 3)
        return now

    def _add(self, name: str, seconds: float) -> None:
        self.result.phases[name] = round(self.result.phases.get(name, 0) + max(seconds, 0.0), 3)


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
