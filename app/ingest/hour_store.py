"""SQL for result_hours: outgoing sessions per (hour of receipt, policy domain).

Kept apart from the day counters (`store.py`): the committer adds a group's hour rows in
the same transaction, one multi-row upsert sorted by domain, and the alert conditions
(same-day spike, silence) read them back. Hours are UTC and truncated in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

from app.ingest.store import jsonb_rows

Conn = AsyncConnection[tuple[Any, ...]]


async def upsert_hour_counts(
    conn: Conn, hour: datetime, now: datetime, counts: Mapping[str, tuple[int, int]]
) -> None:
    """Add (successes, failures) per policy domain to `hour`. The rows go as one JSON
    document (encoded in C; psycopg's array dumpers cost Python per element)."""
    rows = [{"d": d, "s": counts[d][0], "f": counts[d][1]} for d in sorted(counts)]
    await conn.execute(
        """
        INSERT INTO result_hours AS h
            (hour, policy_domain, success_count, failure_count, last_at)
        SELECT %(hour)s, r.d, r.s, r.f, %(now)s
        FROM jsonb_to_recordset(%(rows)s) AS r(d text, s bigint, f bigint)
        ON CONFLICT (hour, policy_domain) DO UPDATE SET
            success_count = h.success_count + EXCLUDED.success_count,
            failure_count = h.failure_count + EXCLUDED.failure_count,
            last_at = GREATEST(h.last_at, EXCLUDED.last_at)
        """,
        {"hour": hour, "now": now, "rows": jsonb_rows(rows)},
    )


@dataclass(frozen=True, slots=True)
class DomainHours:
    """One policy domain's sessions in a recent window and in the baseline before it."""

    policy_domain: str
    recent_success: int
    recent_failure: int
    baseline_success: int
    baseline_failure: int


async def list_domain_hours(
    conn: Conn, *, recent_from: datetime, baseline_from: datetime, min_failures: int
) -> list[DomainHours]:
    """Per domain with at least `min_failures` failures since `recent_from`: its counts
    since then and in [baseline_from, recent_from)."""
    async with conn.cursor(row_factory=class_row(DomainHours)) as cur:
        await cur.execute(
            """
            SELECT policy_domain,
                   coalesce(sum(success_count) FILTER (WHERE hour >= %(recent)s), 0)::bigint
                       AS recent_success,
                   sum(failure_count) FILTER (WHERE hour >= %(recent)s)::bigint
                       AS recent_failure,
                   coalesce(sum(success_count) FILTER (WHERE hour < %(recent)s), 0)::bigint
                       AS baseline_success,
                   coalesce(sum(failure_count) FILTER (WHERE hour < %(recent)s), 0)::bigint
                       AS baseline_failure
            FROM result_hours
            WHERE hour >= %(baseline)s
            GROUP BY policy_domain
            HAVING sum(failure_count) FILTER (WHERE hour >= %(recent)s) >= %(min)s
            ORDER BY policy_domain
            """,
            {"recent": recent_from, "baseline": baseline_from, "min": min_failures},
        )
        return await cur.fetchall()


async def get_last_result_at(conn: Conn, since: datetime) -> datetime | None:
    """The receipt time of the newest result since `since`, or None."""
    cur = await conn.execute(
        "SELECT max(last_at) FROM result_hours WHERE hour >= %(since)s", {"since": since}
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def get_active_hours(conn: Conn, start: datetime, end: datetime) -> int:
    """How many hours in [start, end) had any result."""
    cur = await conn.execute(
        """
        SELECT count(DISTINCT hour) FROM result_hours
        WHERE hour >= %(start)s AND hour < %(end)s
          AND success_count + failure_count > 0
        """,
        {"start": start, "end": end},
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def delete_hours_before(conn: Conn, cutoff: datetime) -> int:
    cur = await conn.execute("DELETE FROM result_hours WHERE hour < %(cutoff)s", {"cutoff": cutoff})
    return cur.rowcount


async def get_failing_domain_count(
    conn: Conn, *, since: datetime, min_sessions: int, min_rate: float
) -> int:
    """Policy domains with `min_sessions` since `since`, failing at `min_rate` or more."""
    cur = await conn.execute(
        """
        SELECT count(*) FROM (
            SELECT policy_domain FROM result_hours WHERE hour >= %(since)s
            GROUP BY policy_domain
            HAVING sum(success_count + failure_count) >= %(min)s
               AND sum(failure_count) >= %(rate)s * sum(success_count + failure_count)
        ) AS failing
        """,
        {"since": since, "min": min_sessions, "rate": min_rate},
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])
