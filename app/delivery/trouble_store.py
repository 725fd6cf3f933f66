"""SQL for delivery trouble, read by the alerts: failed rua, undelivered days, states."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class FailedRua:
    rua: str
    kind: str
    failed_at: datetime
    last_error: str | None
    policy_domain: str
    day: date


async def list_failed_ruas(conn: Conn, since: datetime) -> list[FailedRua]:
    """Per rua, its newest delivery that failed since `since`, unless a later delivery
    to it was sent (then it works again)."""
    async with conn.cursor(row_factory=class_row(FailedRua)) as cur:
        await cur.execute(
            """
            SELECT DISTINCT ON (d.rua) d.rua, d.kind,
                   coalesce(d.last_attempt_at, d.created_at) AS failed_at, d.last_error,
                   r.policy_domain, r.day
            FROM deliveries d JOIN reports r ON r.id = d.report_pk
            WHERE d.state = 'failed'
              AND coalesce(d.last_attempt_at, d.created_at) >= %(since)s
              AND NOT EXISTS (
                  SELECT 1 FROM deliveries s
                  WHERE s.rua = d.rua AND s.state = 'sent'
                    AND s.sent_at > coalesce(d.last_attempt_at, d.created_at))
            ORDER BY d.rua, failed_at DESC
            """,
            {"since": since},
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class UndeliveredDay:
    day: date
    undelivered: int
    total: int


async def list_undelivered_days(
    conn: Conn, *, built_before: datetime, from_day: date
) -> list[UndeliveredDay]:
    """Days since `from_day` with reports built before `built_before` that still have
    deliveries pending, in flight or failed."""
    async with conn.cursor(row_factory=class_row(UndeliveredDay)) as cur:
        await cur.execute(
            """
            SELECT r.day,
                   count(*) FILTER (WHERE d.state IN ('pending', 'sending', 'failed'))
                       AS undelivered,
                   count(*) AS total
            FROM reports r JOIN deliveries d ON d.report_pk = r.id
            WHERE r.day >= %(from_day)s AND r.created_at <= %(built_before)s
            GROUP BY r.day
            HAVING count(*) FILTER (WHERE d.state IN ('pending', 'sending', 'failed')) > 0
            ORDER BY r.day
            """,
            {"from_day": from_day, "built_before": built_before},
        )
        return await cur.fetchall()


async def list_state_counts(conn: Conn) -> list[tuple[str, int]]:
    cur = await conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY 1")
    return [(str(state), int(n)) for state, n in await cur.fetchall()]
