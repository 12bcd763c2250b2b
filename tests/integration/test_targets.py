"""Every target kind lands where it should, restoring from a real SeaweedFS S3 server."""

from __future__ import annotations

import pytest

from pytest_pgrestore.restore._restorer import Restorer
from pytest_pgrestore.settings._target import RestoreTarget

pytestmark = pytest.mark.integration


def _between(a, b) -> str:
    return (a.time + (b.time - a.time) / 2).isoformat().replace("+00:00", "Z")


def restore_rows(settings) -> tuple[int, object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            (rows,) = conn.execute("select count(*) from t").fetchone()
        return rows, inst.result


def test_latest_has_every_row(pg15, settings_factory):
    rows, result = restore_rows(settings_factory(pg15.s3_url, env=pg15.s3_env))
    assert rows == pg15.total_rows
    assert result.outcome == "REACHED"
    assert result.backup == pg15.backups["b2"].name
    assert result.archive_end_lsn is not None


def test_time_between_two_commits_has_the_first_not_the_second(pg15, settings_factory):
    c2 = pg15.commits["c2"]
    rows, result = restore_rows(settings_factory(pg15.s3_url, _between(c2[0], c2[1]), env=pg15.s3_env))
    assert rows == pg15.rows_at("c2", 0)
    assert "before commit" in result.stop_reason


def test_time_target_exactly_at_a_commit_is_inclusive(pg15, settings_factory):
    c1 = pg15.commits["c1"]
    target = c1[1].time.isoformat().replace("+00:00", "Z")
    # clock_timestamp() read after COMMIT is a little later than the commit record's time
    rows, _ = restore_rows(settings_factory(pg15.s3_url, target, env=pg15.s3_env))
    assert rows == pg15.rows_at("c1", 1)


def test_lsn_target(pg15, settings_factory):
    c2 = pg15.commits["c2"]
    rows, result = restore_rows(settings_factory(pg15.s3_url, f"lsn:{c2[1].lsn}", env=pg15.s3_env))
    assert rows == pg15.rows_at("c2", 1)
    assert result.attempts[0].backup == pg15.backups["b2"].name


def test_xid_target_in_the_newest_backup(pg15, settings_factory):
    c2 = pg15.commits["c2"]
    rows, result = restore_rows(settings_factory(pg15.s3_url, f"xid:{c2[0].xid}", env=pg15.s3_env))
    assert rows == pg15.rows_at("c2", 0)
    assert [a.backup for a in result.attempts] == [pg15.backups["b2"].name]


def test_xid_before_the_newest_backup_retries_the_older_one(pg15, settings_factory):
    c1 = pg15.commits["c1"]
    rows, result = restore_rows(settings_factory(pg15.s3_url, f"xid:{c1[0].xid}", env=pg15.s3_env))
    assert rows == pg15.rows_at("c1", 0)
    assert [a.backup for a in result.attempts] == [pg15.backups["b2"].name, pg15.backups["b1"].name]
    assert result.attempts[0].outcome == "ENDED_EARLY"


def test_restore_point_before_the_newest_backup(pg15, settings_factory):
    rows, result = restore_rows(settings_factory(pg15.s3_url, "name:rp_between", env=pg15.s3_env))
    assert rows == pg15.rows_at("c1", 1)
    assert result.attempts[-1].backup == pg15.backups["b1"].name


def test_pinned_restore_point_skips_the_search(pg15, settings_factory):
    target = f"name:rp_between@backup:{pg15.backups['b1'].name}"
    rows, result = restore_rows(settings_factory(pg15.s3_url, target, env=pg15.s3_env))
    assert rows == pg15.rows_at("c1", 1)
    assert [a.backup for a in result.attempts] == [pg15.backups["b1"].name]


def test_immediate_stops_at_the_newest_backup(pg15, settings_factory):
    rows, result = restore_rows(settings_factory(pg15.s3_url, "immediate", env=pg15.s3_env))
    assert rows == pg15.rows_at("c1", 1)
    assert "consistency" in result.stop_reason


def test_backup_target_stops_at_that_backup(pg15, settings_factory):
    rows, _ = restore_rows(settings_factory(pg15.s3_url, f"backup:{pg15.backups['b1'].name}", env=pg15.s3_env))
    assert rows == pg15.rows_at("c0", 1)


def test_bare_backup_name_is_a_backup_target(pg15, settings_factory):
    rows, _ = restore_rows(settings_factory(pg15.s3_url, pg15.backups["b1"].name, env=pg15.s3_env))
    assert rows == pg15.rows_at("c0", 1)


def test_oldest_proves_retention_is_restorable(pg15, settings_factory):
    rows, result = restore_rows(settings_factory(pg15.s3_url, "oldest", env=pg15.s3_env))
    assert rows == pg15.rows_at("c0", 1)
    assert result.backup == pg15.backups["b1"].name


def test_restore_target_parse_round_trip_is_what_the_result_reports(pg15, settings_factory):
    target = RestoreTarget.parse(f"lsn:{pg15.commits['c2'][0].lsn}")
    with Restorer(settings_factory(pg15.s3_url, str(target), env=pg15.s3_env)).restore() as inst:
        assert inst.result.target == str(target)
        assert inst.result.phases.keys() >= {"catalog", "plan", "fetch", "start_to_consistent",
                                             "consistent_to_target", "target_to_first_query"}
        assert abs(sum(inst.result.phases.values()) - inst.result.rto_seconds) < 0.02  # consecutive
        assert inst.result.recency["target_gap_bytes"] >= 0  # an inclusive LSN target: replayed to it or past
        assert inst.result.bytes_fetched > 0 and inst.result.wal_segments > 0
