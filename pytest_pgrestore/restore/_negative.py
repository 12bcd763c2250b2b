"""The negative control: the same restore with one WAL segment the target needs withheld.

A drill proves something only if it can fail.  ``--restore-negative-control`` adds, next to each
``restore[<target>]``, an item ``negative_control[<target>]`` that plans from the full listing,
then withholds at delivery time the last WAL segment the target needs — the spool answers
"absent" for it, exactly as for a segment the archive lost.  The control passes only when the
verdict catches the loss: ENDED_EARLY, TRUNCATED or RESTORE_COMMAND_ABORT.  A REACHED (or any
other outcome) means the drill stopped looking, and fails the control.

Which segment is withheld:

* ``latest``: the newest archived segment on the planned timeline;
* ``lsn:``: the segment holding the target LSN;
* ``immediate``, ``oldest``, ``backup:``: the segment holding the end of the backup (inside
  its start–stop range: without it the copy never becomes consistent);
* a time, ``xid:`` or ``name:``: where replay stopped is only known by replaying, so the segment
  where this run's own restore of the same target stopped; without one, for a time target the
  first planned segment archived at or after the target time (the stop record cannot lie
  before it), else the last planned segment.

Normal restores are not touched: the control restores separately, with its own hook.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import NegativeControlFailed, PgRestoreError
from ..formats._catalog import WalArchive
from ..formats._wal import parse_segment_name, segno_of
from ..settings._options import Settings
from ..settings._target import format_lsn, parse_lsn
from ._instance import Hooks
from ._plan import Plan, make_plan
from ._result import Outcome, RestoreResult
from ._spool import Withheld

log = logging.getLogger(__name__)

__all__ = ["CAUGHT", "NegativeControl", "NegativeControlFailed", "choose_withheld", "run_negative_control"]

#: outcomes that show the drill noticed the missing segment
CAUGHT = (Outcome.ENDED_EARLY, Outcome.TRUNCATED, Outcome.RESTORE_COMMAND_ABORT)


@dataclass
class NegativeControl:
    target: str
    withheld: str  # the WAL file name held back
    why: str  # why that one
    outcome: Outcome | None
    detail: str
    asked: bool  # replay asked for it (and was told "absent")

    @property
    def caught(self) -> bool:
        return self.outcome in CAUGHT

    def properties(self) -> list[tuple[str, str]]:
        return [
            ("negative_control_withheld", self.withheld),
            ("negative_control_why", self.why),
            ("negative_control_outcome", str(self.outcome)),
            ("negative_control_detail", self.detail),
        ]


def choose_withheld(plan: Plan, wal: WalArchive, healthy: RestoreResult | None = None) -> tuple[str, str]:
    """(WAL file name, why) of the segment to withhold for ``plan``."""
    if not plan.segments:
        raise NegativeControlFailed(
            f"negative control for {plan.target}: the plan needs no archived WAL, so nothing can be withheld",
            checked=f"the WAL plan of backup {plan.backup.name}",
            fix="archive WAL (archive_command) so that restores depend on it, or drop --restore-negative-control",
        )
    size = wal.segment_size or 16 << 20
    target, backup = plan.target, plan.backup
    if target.stops_at_consistency:
        end = max(backup.stop_lsn - 1, backup.start_lsn)
        name = _planned_at(plan, end, size) or plan.segments[-1]
        return name, (
            f"holds the end of backup {backup.name} (start {format_lsn(backup.start_lsn)}, "
            f"stop {format_lsn(backup.stop_lsn)}): without it the copy never becomes consistent"
        )
    if target.kind == "latest":
        return plan.segments[-1], f"the newest archived segment on timeline {plan.timeline}"
    if target.kind == "lsn":
        return plan.segments[-1], f"holds the target {format_lsn(target.stop_lsn)}"
    stopped = _stop_lsn(healthy, target)
    if stopped is not None:
        hit = _planned_at(plan, stopped, size) or _planned_at(plan, max(stopped - 1, 0), size)
        if hit:
            return hit, f"replay of {target} in this run stopped in it (at {format_lsn(stopped)})"
    if target.kind == "time":
        for name in plan.segments:
            seg = parse_segment_name(name, size)
            info = wal.segments.get(seg.timeline, {}).get(seg.segno)
            if info is not None and info.last_modified >= target.stop_time:
                return name, (
                    f"the first planned segment archived at or after {target} "
                    f"({info.last_modified.isoformat()}): the record that ends recovery is in it or later"
                )
    return plan.segments[-1], f"the last planned segment (where {target} lies is only known by replaying)"


def _stop_lsn(healthy: RestoreResult | None, target) -> int | None:
    if healthy is None or not healthy.replay_lsn or healthy.target != str(target):
        return None
    return parse_lsn(healthy.replay_lsn)


def _planned_at(plan: Plan, lsn: int, size: int) -> str | None:
    segno = segno_of(lsn, size)
    return next((n for n in plan.segments if parse_segment_name(n, size).segno == segno), None)


def run_negative_control(settings: Settings, *, healthy: RestoreResult | None = None) -> NegativeControl:
    """Restore ``settings``'s target with one needed WAL segment withheld; raise
    :class:`NegativeControlFailed` unless the verdict catches it."""
    from ..errors import RestoreFailed
    from ._restorer import Restorer

    settings = settings.replace("negative control", keep="never")  # its copy is never worth keeping
    restorer = Restorer(settings)
    catalog = restorer.catalog()
    plan = make_plan(
        catalog,
        settings.target,
        timeline=settings.timeline,  # the full listing
        inclusive=settings.target_inclusive,
    )
    name, why = choose_withheld(plan, catalog.wal, healthy)
    asked: list[str] = []

    def withhold(wanted: str) -> None:
        if wanted == name:
            asked.append(wanted)
            raise Withheld(f"negative control for {settings.target}: {why}")

    restorer.hooks = Hooks(before_deliver=withhold)
    log.info("negative control for %s: withholding %s (%s)", settings.target, name, why)
    try:
        with restorer.restore(settings.target) as inst:
            result = inst.result
    except RestoreFailed as exc:
        result = exc.result
    except PgRestoreError:
        raise  # refused or broken before a verdict (pre-flight, store, corrupt backup): its own message
    except Exception as exc:  # a verdict said the copy is fine and it was not: the drill stopped looking
        raise NegativeControlFailed(
            f"negative control for {settings.target} FAILED: WAL segment {name} was withheld and the verdict "
            f"let the restore through to a server that is not usable ({type(exc).__name__}: {exc})",
            checked=f"withheld {name}: {why}",
            fix="the drill's verdict is not looking at how recovery ended; check hooks or patches that change it",
        ) from exc
    control = NegativeControl(str(settings.target), name, why, result.outcome, result.detail, bool(asked))
    result.evidence["negative_control"] = {"withheld": name, "why": why}
    if not control.caught:
        raise NegativeControlFailed(
            f"negative control for {settings.target} FAILED: WAL segment {name} was withheld, yet the restore "
            f"ended {control.outcome}" + (f" ({control.detail.splitlines()[0]})" if control.detail else ""),
            checked=f"withheld {name}: {why}; replay {'asked for it and was told absent' if asked else 'never asked for it'}; "
            f"a drill that notices missing WAL ends {', '.join(map(str, CAUGHT))}",
            fix="the drill's verdict is not looking at where replay ended: it would pass a backup whose WAL is "
            "gone. Check hooks or patches that change the verdict; a backup that carries its own WAL "
            "(pg_basebackup -X fetch/stream) lets replay read the segment from pg_wal instead",
        )
    return control
