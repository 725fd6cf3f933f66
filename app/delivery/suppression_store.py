"""SQL for the suppression list: rua the operator silenced, matched by equal `target`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    id: int
    target: str
    comment: str
    expires_at: datetime | None
    created_at: datetime
    # 'operator', or 'bounces' for one the bounces of the rua made (app.delivery.bounces).
    source: str


async def upsert_suppression(
    conn: Conn, *, target: str, comment: str, expires_at: datetime | None, now: datetime
) -> SuppressionRow:
    """Add a suppression, or replace the comment and expiry of the existing one."""
    async with conn.cursor(row_factory=class_row(SuppressionRow)) as cur:
        await cur.execute(
            """
            INSERT INTO suppressions (target, comment, expires_at, created_at)
            VALUES (%(target)s, %(comment)s, %(expires_at)s, %(now)s)
            ON CONFLICT (target) DO UPDATE
                SET comment = EXCLUDED.comment, expires_at = EXCLUDED.expires_at,
                    source = 'operator'
            RETURNING id, target, comment, expires_at, created_at, source
            """,
            {"target": target, "comment": comment, "expires_at": expires_at, "now": now},
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def list_suppressions(conn: Conn) -> list[SuppressionRow]:
    async with conn.cursor(row_factory=class_row(SuppressionRow)) as cur:
        await cur.execute(
            "SELECT id, target, comment, expires_at, created_at, source FROM suppressions"
            " ORDER BY target"
        )
        return await cur.fetchall()


async def delete_suppression_by_id(conn: Conn, suppression_id: int) -> bool:
    cur = await conn.execute("DELETE FROM suppressions WHERE id = %(id)s", {"id": suppression_id})
    return cur.rowcount == 1


async def delete_suppression(conn: Conn, target: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM suppressions WHERE target = %(target)s", {"target": target}
    )
    return cur.rowcount == 1
