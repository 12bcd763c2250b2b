"""A stand-in for the application's own data layer, pointed at the restored copy."""

import psycopg


def enqueue_job(conn: psycopg.Connection, model_name: str) -> int:
    row = conn.execute(
        "insert into jobs (model_id, status) select id, 'queued' from models where name = %s returning id",
        (model_name,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no model {model_name!r}")
    return row[0]


def finish_job(conn: psycopg.Connection, job_id: int) -> None:
    conn.execute("update jobs set status = 'done' where id = %s and status in ('queued', 'running')", (job_id,))


def job_status(conn: psycopg.Connection, job_id: int) -> str:
    return conn.execute("select status from jobs where id = %s", (job_id,)).fetchone()[0]
