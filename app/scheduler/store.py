"""SQL for scheduler_jobs: one row per (job, day); whoever inserts or takes it over runs it.

A row is 'running' under its owner's lease, 'retry' until `next_run_at`, or 'done'. A
claim is one upsert: it succeeds for a new row, a 'retry' row that is due, or a 'running'
row whose lease expired (its instance died); otherwise another instance has it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[tuple[Any, ...]]


async def claim_job(
    conn: Conn,
    *,
    job: str,
    day: date,
    owner: str,
    now: datetime,
    lease_seconds: float,
) -> int | None:
    """Take the (job, day) row for `owner`; the run number, or None if not ours now."""
    cur = await conn.execute(
        """
        INSERT INTO scheduler_jobs AS j
            (job, day, state, owner, lease_expires_at, runs, started_at)
        SELECT %(job)s, %(day)s, 'running', %(owner)s,
               %(now)s::timestamptz + make_interval(secs => %(lease_seconds)s), 1, %(now)s
        ON CONFLICT (job, day) DO UPDATE SET
            state = 'running',
            owner = EXCLUDED.owner,
            lease_expires_at = EXCLUDED.lease_expires_at,
            runs = j.runs + 1,
            started_at = EXCLUDED.started_at,
            finished_at = NULL
        WHERE (j.state = 'running' AND j.lease_expires_at <= EXCLUDED.started_at)
           OR (j.state = 'retry' AND j.next_run_at <= EXCLUDED.started_at)
        RETURNING runs
        """,
        {
            "job": job,
            "day": day,
            "owner": owner,
            "now": now,
            "lease_seconds": lease_seconds,
        },
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def mark_job_finished(
    conn: Conn,
    *,
    job: str,
    day: date,
    owner: str,
    now: datetime,
    retry_at: datetime | None,
    error: str | None = None,
) -> bool:
    """'done', or 'retry' at `retry_at`; only while the row is still this owner's."""
    cur = await conn.execute(
        """
        UPDATE scheduler_jobs SET
            state = CASE WHEN %(retry_at)s::timestamptz IS NULL THEN 'done' ELSE 'retry' END,
            next_run_at = %(retry_at)s::timestamptz,
            last_error = %(error)s,
            lease_expires_at = NULL,
            finished_at = %(now)s
        WHERE job = %(job)s AND day = %(day)s AND owner = %(owner)s AND state = 'running'
        """,
        {
            "job": job,
            "day": day,
            "owner": owner,
            "now": now,
            "retry_at": retry_at,
            "error": error,
        },
    )
    return cur.rowcount == 1


async def list_due_job_days(conn: Conn, *, job: str, now: datetime) -> list[date]:
    """Days whose job waits for a retry that is due, or whose runner died."""
    cur = await conn.execute(
        """
        SELECT day FROM scheduler_jobs
        WHERE job = %(job)s
          AND ((state = 'retry' AND next_run_at <= %(now)s)
            OR (state = 'running'
                AND lease_expires_at <= %(now)s))
        ORDER BY day
        """,
        {"job": job, "now": now},
    )
    return [row[0] for row in await cur.fetchall()]


async def delete_jobs_before(conn: Conn, day: date) -> int:
    """Retention: forget job rows of days whose data is gone."""
    cur = await conn.execute("DELETE FROM scheduler_jobs WHERE day < %(day)s", {"day": day})
    return cur.rowcount
