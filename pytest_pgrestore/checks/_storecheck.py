"""Evidence that the restored copy wrote nothing to the backup store.

When a restored server promotes it starts a new timeline.  Had production's ``archive_command``
(or anything else) escaped the quarantine, the first objects it would push are that timeline's
``.history`` file and its first WAL segment.  Right after the restore the store is asked for
both (two small listings); the answer goes into ``result.evidence["store_untouched"]``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

__all__ = ["record_store_untouched"]


def record_store_untouched(fmt, inst) -> None:
    evidence = inst.result.evidence
    try:
        with inst.admin_connect("template1", autocommit=True) as conn:
            (walfile,) = conn.execute("select pg_walfile_name(pg_current_wal_lsn())").fetchone()
        tli = int(walfile[:8], 16)
        names = [f"{tli:08X}.history", walfile]
        found = [name for name in names if fmt.find_wal(name)]
    except Exception as exc:  # evidence only: never fails a restore that otherwise worked
        evidence["store_untouched"] = f"not checked: {type(exc).__name__}: {exc}"
        return
    evidence["new_timeline"] = tli
    if found:
        evidence["store_untouched"] = (
            f"NO: the store holds {', '.join(found)} of timeline {tli}, the timeline "
            "the restored server created"
        )
        log.warning(
            "the backup store holds %s of timeline %d, which the restored server created: has "
            "something archived from the restored copy?",
            ", ".join(found),
            tli,
        )
    else:
        evidence["store_untouched"] = (
            f"yes: no object of timeline {tli} (created by the restored server) in the "
            f"store; checked {', '.join(names)}"
        )
