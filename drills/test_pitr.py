"""Point-in-time drill: restore to just before an incident and prove the rows are back.

Set PGRESTORE_DRILL_INCIDENT_AT to an RFC 3339 time just before the incident (the demo does).
"""

import os
from datetime import datetime

import pytest

INCIDENT_AT = os.environ.get("PGRESTORE_DRILL_INCIDENT_AT")

pytestmark = [
    pytest.mark.skipif(not INCIDENT_AT, reason="PGRESTORE_DRILL_INCIDENT_AT is not set"),
    pytest.mark.restore_target(INCIDENT_AT or "latest"),
]


def test_finished_jobs_are_back_before_the_mass_delete(restored_db, restore_result):
    assert restore_result.outcome == "REACHED"
    (done,) = restored_db.execute("select count(*) from jobs where status = 'done'").fetchone()
    assert done == 120


def test_nothing_after_the_target_was_replayed(restore_result):
    target = datetime.fromisoformat(INCIDENT_AT.replace("Z", "+00:00"))
    last = restore_result.last_replay_time
    assert last is None or datetime.fromisoformat(last) <= target
