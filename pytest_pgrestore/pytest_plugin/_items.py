"""What the plugin's modules share: the stash keys, the marker, the effective settings of a test,
and the ``restore[...]`` items that carry each restore's verdict."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ..errors import PgRestoreError, RestoreFailed, UsageError
from ..restore._manager import RestoreManager, key_for
from ..restore._result import RestoreResult
from ..settings._options import Settings

RESTORE_FIXTURES = frozenset({"restored_postgres", "restored_db", "restored_db_writable", "restore_result"})
MARKER = "restore_target"
_SETTINGS = pytest.StashKey[Settings]()
_MANAGER = pytest.StashKey[RestoreManager]()
_SIGTERM: pytest.StashKey[Callable[[], None] | None] = pytest.StashKey()  # puts the old SIGTERM handler back


def settings_for(node: pytest.Item) -> Settings:
    """The effective settings of one test: the closest ``restore_target`` marker wins."""
    settings = node.config.stash[_SETTINGS]
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return settings
    overrides = dict(marker.kwargs)
    if marker.args:
        overrides["target"] = marker.args[0]
    try:
        return settings.replace(f"marker {MARKER}", **overrides)
    except UsageError as exc:
        raise pytest.UsageError(f"{node.nodeid}: {exc}") from None


# -- one item per restore -----------------------------------------------------------------
class RestoreItem(pytest.Item):
    """``restore[<target>]``: runs (or reports) one restore and carries its verdict."""

    def __init__(self, *, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    def runtest(self) -> None:
        if self.settings.plan_only:
            return self._plan_only()
        manager = self.config.stash[_MANAGER]
        try:
            inst = manager.ensure(self.settings)
        finally:
            result = manager.results.get(key_for(self.settings))
            if result is not None:
                for name in ("outcome", "backup", "replay_lsn", "timeline", "wal_segments", "bytes_fetched"):
                    self.user_properties.append((f"restore_{name}", str(getattr(result, name))))
                preload = preload_note(result)
                if preload:
                    self.user_properties.append(("restore_preload", preload))
        self.user_properties.append(("restore_detail", inst.result.detail))

    def _plan_only(self) -> None:
        """--restore-plan-only: the catalog and every pre-flight check, no download."""
        from ..restore._restorer import Restorer
        from ..settings._target import format_lsn

        plan = Restorer(self.settings).plan(self.settings.target)
        props = {"plan_backup": plan.backup.name, "plan_timeline": plan.timeline,
                 "plan_wal_segments": len(plan.segments),
                 "plan_wal_range": f"{plan.segments[0]}..{plan.segments[-1]}" if plan.segments else "",
                 "plan_archive_end": format_lsn(plan.archive_end_lsn) if plan.archive_end_lsn else ""}
        self.user_properties.extend((k, str(v)) for k, v in props.items())

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, PgRestoreError):
            return describe_failure(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, self.name


class NegativeControlItem(RestoreItem):
    """``negative_control[<target>]``: the same restore with one WAL segment the target needs
    withheld; passes only when the verdict catches it (``--restore-negative-control``)."""

    def runtest(self) -> None:
        from ..restore._negative import run_negative_control

        healthy = self.config.stash[_MANAGER].results.get(key_for(self.settings))
        self.user_properties.extend(run_negative_control(self.settings, healthy=healthy).properties())


def preload_note(result: RestoreResult) -> str | None:
    """What the quarantine did to shared_preload_libraries, when there is anything to say."""
    preload = result.evidence.get("preload") or {}
    if preload.get("configured") == [] and not preload.get("kept"):
        return None  # nothing preloaded, nothing asked for
    return preload.get("summary")


def describe_failure(exc: PgRestoreError) -> str:
    text = str(exc)
    result = getattr(exc, "result", None)
    if isinstance(exc, RestoreFailed) and result is not None and result.log_tail:
        text += "\n  server log (last lines):\n    " + "\n    ".join(result.log_tail[-12:])
    return text
