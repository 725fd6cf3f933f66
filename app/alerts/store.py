"""SQL for alerts and alert_notifications.

A condition (kind, subject) has at most one open alert (partial unique index
`alerts_open`): raising is an upsert that inserts only when none is open, so any number
of instances raise it once. Digests claim the alerts not yet notified with
`FOR UPDATE SKIP LOCKED`; notifications are claimed like deliveries, under a lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[tuple[Any, ...]]

# Namespace of the advisory locks of this area (classid of the two-key form).
LOCK_NAMESPACE = 84_600_016
# Second keys: one kind's evaluation at a time; one digest at a time.
DIGEST_LOCK = 0
# An open alert's summary, details and last_seen_at are refreshed at most this often.
REFRESH_SECONDS = 900


def _jsonb(value: object) -> Jsonb:
    return Jsonb(value, dumps=orjson.dumps)


async def lock_xact(conn: Conn, key: int) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%(ns)s, %(key)s)", {"ns": LOCK_NAMESPACE, "key": key}
    )


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    kind: str
    subject: str
    window_start: datetime
    summary: str
    details: dict[str, Any]
    raised_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    notified_at: datetime | None


async def upsert_open_alerts(
    conn: Conn,
    *,
    kind: str,
    window_start: datetime,
    now: datetime,
    rows: list[tuple[str, str, dict[str, Any]]],
) -> list[int]:
    """Raise (subject, summary, details) unless open already (then refresh it); returns
    the ids of the alerts this call raised."""
    rows = sorted(rows, key=lambda r: r[0])
    cur = await conn.execute(
        """
        INSERT INTO alerts AS a
            (kind, subject, window_start, summary, details, raised_at, last_seen_at)
        SELECT %(kind)s, s, %(window)s, m, d, %(now)s, %(now)s
        FROM unnest(%(subjects)s::text[], %(summaries)s::text[], %(details)s::jsonb[])
            AS u(s, m, d)
        ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO UPDATE SET
            summary = EXCLUDED.summary, details = EXCLUDED.details,
            last_seen_at = EXCLUDED.last_seen_at
        -- An open alert's figures are refreshed every few minutes, not every round:
        -- a storm of 10,000 open alerts then costs no 10,000 updates per round.
        WHERE a.last_seen_at <= EXCLUDED.last_seen_at - make_interval(secs => %(refresh)s)
        RETURNING id, xmax = 0
        """,
        {
            "kind": kind,
            "refresh": REFRESH_SECONDS,
            "window": window_start,
            "now": now,
            "subjects": [r[0] for r in rows],
            "summaries": [r[1] for r in rows],
            "details": [_jsonb(r[2]) for r in rows],
        },
    )
    return [int(row[0]) for row in await cur.fetchall() if row[1]]


async def list_open_subjects(conn: Conn, kind: str) -> dict[str, datetime]:
    """The open alerts of `kind`: subject -> last_seen_at."""
    cur = await conn.execute(
        "SELECT subject, last_seen_at FROM alerts WHERE kind = %(kind)s AND resolved_at IS NULL",
        {"kind": kind},
    )
    return {str(subject): seen for subject, seen in await cur.fetchall()}


async def mark_alerts_resolved(conn: Conn, *, kind: str, keep: list[str], now: datetime) -> int:
    """Resolve the open alerts of `kind` whose subject is not in `keep`."""
    cur = await conn.execute(
        """
        UPDATE alerts SET resolved_at = %(now)s
        WHERE kind = %(kind)s AND resolved_at IS NULL
          AND subject NOT IN (SELECT unnest(%(keep)s::text[]))  -- hashed: 10,000s of subjects
        """,
        {"kind": kind, "keep": keep, "now": now},
    )
    return cur.rowcount


async def insert_resolved_alert(
    conn: Conn, *, kind: str, subject: str, summary: str, details: dict[str, Any], now: datetime
) -> int:
    """An alert raised and resolved at once (a test notification)."""
    cur = await conn.execute(
        """
        INSERT INTO alerts (kind, subject, window_start, summary, details, raised_at,
                            last_seen_at, resolved_at)
        VALUES (%(kind)s, %(subject)s, %(now)s, %(summary)s, %(details)s, %(now)s, %(now)s,
                %(now)s)
        RETURNING id
        """,
        {
            "kind": kind,
            "subject": subject,
            "summary": summary,
            "details": _jsonb(details),
            "now": now,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def list_alerts(
    conn: Conn, *, open_only: bool, kind: str | None, before_id: int | None, limit: int
) -> list[AlertRow]:
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            """
            SELECT id, kind, subject, window_start, summary, details, raised_at,
                   last_seen_at, resolved_at, notified_at
            FROM alerts
            WHERE (NOT %(open_only)s OR resolved_at IS NULL)
              AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
              AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
            ORDER BY id DESC LIMIT %(limit)s
            """,
            {"open_only": open_only, "kind": kind, "before": before_id, "limit": limit},
        )
        return await cur.fetchall()


async def list_open_counts(conn: Conn) -> list[tuple[str, int]]:
    cur = await conn.execute(
        "SELECT kind, count(*) FROM alerts WHERE resolved_at IS NULL GROUP BY kind ORDER BY 1"
    )
    return [(str(k), int(n)) for k, n in await cur.fetchall()]


async def claim_unnotified_alerts(conn: Conn, now: datetime) -> list[AlertRow]:
    """Take every alert not yet in a digest (rows other digests hold are skipped) and
    mark it notified."""
    async with conn.cursor(row_factory=class_row(AlertRow)) as cur:
        await cur.execute(
            """
            WITH taken AS (
                SELECT id FROM alerts WHERE notified_at IS NULL
                ORDER BY id FOR UPDATE SKIP LOCKED
            )
            UPDATE alerts a SET notified_at = %(now)s FROM taken WHERE a.id = taken.id
            RETURNING a.id, a.kind, a.subject, a.window_start, a.summary, a.details,
                      a.raised_at, a.last_seen_at, a.resolved_at, a.notified_at
            """,
            {"now": now},
        )
        rows = await cur.fetchall()
    return sorted(rows, key=lambda r: r.id)


async def get_last_digest_at(conn: Conn) -> datetime | None:
    cur = await conn.execute("SELECT max(created_at) FROM alert_notifications")
    row = await cur.fetchone()
    return None if row is None else row[0]


async def insert_notifications(
    conn: Conn,
    *,
    targets: list[tuple[str, str]],
    payload: dict[str, Any],
    alert_ids: list[int],
    now: datetime,
) -> list[int]:
    """One pending notification per (channel, target) carrying `payload`."""
    cur = await conn.execute(
        """
        INSERT INTO alert_notifications
            (channel, target, payload, alert_ids, next_attempt_at, created_at)
        SELECT c, t, %(payload)s, %(ids)s, %(now)s, %(now)s
        FROM unnest(%(channels)s::text[], %(targets)s::text[]) AS u(c, t)
        RETURNING id
        """,
        {
            "payload": _jsonb(payload),
            "ids": alert_ids,
            "now": now,
            "channels": [c for c, _ in targets],
            "targets": [t for _, t in targets],
        },
    )
    return [int(row[0]) for row in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    id: int
    channel: str
    target: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


async def claim_due_notifications(
    conn: Conn, *, now: datetime, owner: str, lease_seconds: float, limit: int
) -> list[ClaimedNotification]:
    """Due pending notifications, and those whose sender died (lease expired)."""
    async with conn.cursor(row_factory=class_row(ClaimedNotification)) as cur:
        await cur.execute(
            """
            WITH due AS (
                SELECT id FROM alert_notifications
                WHERE (state = 'pending' AND next_attempt_at <= %(now)s)
                   OR (state = 'sending' AND lease_expires_at <= %(now)s)
                ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            UPDATE alert_notifications n SET
                state = 'sending', attempts = n.attempts + 1, lease_owner = %(owner)s,
                lease_expires_at = %(now)s::timestamptz
                    + make_interval(secs => %(lease)s)
            FROM due WHERE n.id = due.id
            RETURNING n.id, n.channel, n.target, n.payload, n.attempts, n.created_at
            """,
            {"now": now, "owner": owner, "lease": lease_seconds, "limit": limit},
        )
        return await cur.fetchall()


async def mark_notification(
    conn: Conn,
    *,
    notification_id: int,
    owner: str,
    state: str,
    now: datetime,
    next_attempt_at: datetime | None,
    error: str | None,
) -> None:
    """Record an attempt's outcome: 'sent', 'failed', or 'pending' again at a later time."""
    await conn.execute(
        """
        UPDATE alert_notifications SET
            state = %(state)s, last_error = %(error)s, lease_owner = NULL,
            lease_expires_at = NULL,
            next_attempt_at = coalesce(%(next)s, next_attempt_at),
            sent_at = CASE WHEN %(state)s = 'sent' THEN %(now)s END
        WHERE id = %(id)s AND lease_owner = %(owner)s
        """,
        {
            "id": notification_id,
            "owner": owner,
            "state": state,
            "now": now,
            "next": next_attempt_at,
            "error": error,
        },
    )


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    channel: str
    target: str
    state: str
    attempts: int
    alert_ids: list[int]
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


async def list_notifications(conn: Conn, limit: int) -> list[NotificationRow]:
    async with conn.cursor(row_factory=class_row(NotificationRow)) as cur:
        await cur.execute(
            """
            SELECT id, channel, target, state, attempts, alert_ids, last_error, created_at,
                   sent_at
            FROM alert_notifications ORDER BY id DESC LIMIT %(limit)s
            """,
            {"limit": limit},
        )
        return await cur.fetchall()


async def delete_before(conn: Conn, cutoff: datetime) -> int:
    """Resolved alerts and finished notifications older than `cutoff`."""
    cur = await conn.execute(
        """
        WITH n AS (
            DELETE FROM alert_notifications
            WHERE created_at < %(cutoff)s AND state IN ('sent', 'failed') RETURNING 1
        )
        DELETE FROM alerts WHERE resolved_at < %(cutoff)s AND notified_at IS NOT NULL
        """,
        {"cutoff": cutoff},
    )
    return cur.rowcount
