"""Checklist (optional): the application's own smoke test passes against the restored copy.

It writes, so it runs on a per-test clone of the restored database: other drills never see it.
"""

import app


def test_application_can_enqueue_and_finish_a_job(restored_db_writable):
    conn = restored_db_writable
    job = app.enqueue_job(conn, "model-01")
    assert app.job_status(conn, job) == "queued"
    app.finish_job(conn, job)
    assert app.job_status(conn, job) == "done"
    conn.commit()


def test_writes_stay_in_the_clone(restored_db):
    # the app smoke test above committed into its clone, never into the drilled database
    (queued,) = restored_db.execute("select count(*) from jobs where id > 200").fetchone()
    assert queued == 0
