"""SQL for bounces: the delivery a DSN names, its attempt, a rua's bounce days, and the
suppression they lead to.

A rua's bounce days are counted in SQL: the UTC days on which a delivery to it first
bounced permanently, after its last report that was sent and did not bounce within the
settle time. DSNs of one rua are counted one after the other (a transaction lock on the
rua): two arriving together can not both miss the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[Any, ...]]

# Namespace of the per-rua bounce locks (classid of the two-key advisory lock form).
BOUNCE_LOCK_NAMESPACE = 84_600_023
# The attempt log's `owner` of rows a DSN wrote.
DSN_OWNER = "dsn"


@dataclass(frozen=True, slots=True)
class BouncedDelivery:
    id: int
    rua: str
    kind: str
    state: str
    report_id: str


async def get_delivery_for_update(conn: Conn, delivery_id: int) -> BouncedDelivery | None:
    """The delivery, locked until the transaction ends."""
    async with conn.cursor(row_factory=class_row(BouncedDelivery)) as cur:
        await cur.execute(
            """
            SELECT d.id, d.rua, d.kind, d.state, r.report_id
            FROM deliveries d JOIN reports r ON r.id = d.report_pk
            WHERE d.id = %(id)s
            FOR UPDATE OF d
            """,
            {"id": delivery_id},
        )
        return await cur.fetchone()


async def lock_rua(conn: Conn, rua: str) -> None:
    """Serialise the bounce counting of one rua until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%(ns)s, hashtext(%(rua)s))",
        {"ns": BOUNCE_LOCK_NAMESPACE, "rua": rua},
    )


async def insert_bounce_attempt(
    conn: Conn,
    *,
    delivery_id: int,
    outcome: str,
    smtp_reply_code: int | None,
    reason: str,
    excerpt: str | None,
    now: datetime,
) -> None:
    """Add the DSN to the delivery's attempt log, numbered as the attempt it is about."""
    await conn.execute(
        """
        INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at,
            outcome, smtp_reply_code, reason, excerpt, owner)
        SELECT id, attempts, %(now)s, %(now)s, %(outcome)s, %(code)s, %(reason)s,
               %(excerpt)s, %(owner)s
        FROM deliveries WHERE id = %(id)s
        """,
        {
            "id": delivery_id,
            "now": now,
            "outcome": outcome,
            "code": smtp_reply_code,
            "reason": reason,
            "excerpt": excerpt,
            "owner": DSN_OWNER,
        },
    )


async def mark_delivery_bounced(conn: Conn, *, delivery_id: int, last_error: str) -> bool:
    """A sent delivery that bounced permanently is 'failed'; True when it was 'sent'."""
    cur = await conn.execute(
        """
        UPDATE deliveries SET state = 'failed', last_error = %(error)s
        WHERE id = %(id)s AND state = 'sent'
        """,
        {"id": delivery_id, "error": last_error},
    )
    return cur.rowcount == 1


async def get_bounce_days(conn: Conn, *, rua: str, now: datetime, settle_seconds: float) -> int:
    """Distinct UTC days on which a delivery to `rua` first bounced permanently, since its
    newest delivery that was sent at least `settle_seconds` ago and did not bounce."""
    cur = await conn.execute(
        """
        WITH delivered AS (
            SELECT max(sent_at) AS at FROM deliveries
            WHERE rua = %(rua)s AND state = 'sent'
              AND sent_at <= %(now)s - make_interval(secs => %(settle)s)
        ), first_bounce AS (
            SELECT DISTINCT ON (a.delivery_id) a.finished_at
            FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
            WHERE d.rua = %(rua)s AND a.outcome = 'bounced'
            ORDER BY a.delivery_id, a.id
        )
        SELECT count(DISTINCT (finished_at AT TIME ZONE 'UTC')::date) FROM first_bounce
        WHERE finished_at > COALESCE((SELECT at FROM delivered), '-infinity')
        """,
        {"rua": rua, "now": now, "settle": settle_seconds},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def upsert_bounce_suppression(
    conn: Conn, *, target: str, comment: str, expires_at: datetime, now: datetime
) -> bool:
    """Suppress `target` because of its bounces; an operator's entry that is still in
    force is left as it is. True when the suppression was written."""
    cur = await conn.execute(
        """
        INSERT INTO suppressions AS s (target, comment, expires_at, created_at, source)
        VALUES (%(target)s, %(comment)s, %(expires_at)s, %(now)s, 'bounces')
        ON CONFLICT (target) DO UPDATE
            SET comment = EXCLUDED.comment, expires_at = EXCLUDED.expires_at,
                created_at = EXCLUDED.created_at, source = 'bounces'
            WHERE s.source = 'bounces' OR s.expires_at <= %(now)s
        """,
        {"target": target, "comment": comment, "expires_at": expires_at, "now": now},
    )
    return cur.rowcount == 1
