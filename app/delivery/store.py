"""SQL for claiming deliveries under a lease, recording attempts, and reading them back.

Claiming is one statement: due 'pending' rows and 'sending' rows whose lease expired are
locked with `FOR UPDATE SKIP LOCKED` (so concurrent instances take disjoint rows), set to
'sending' under this owner's lease, and returned with their report. Every mark is one
statement too, guarded by `lease_owner = owner AND state = 'sending'`: an instance whose
lease was taken over can not overwrite the new owner's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[Any, ...]]

# Every `now` is the service's clock (app.clock), passed in: leases, due times and the
# times written all come from it, so a test with a fake clock runs retries in no time.


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    rua: str
    kind: str
    attempts: int
    first_attempt_at: datetime
    started_at: datetime
    report_id: str
    day: date
    policy_domain: str
    filename: str
    report_gzip: bytes


_CLAIM = """
WITH expired AS (
    SELECT id, lease_owner, attempts, last_attempt_at FROM deliveries
    WHERE state = 'sending' AND lease_expires_at <= %(now)s
      AND (%(day)s::date IS NULL
           OR report_pk IN (SELECT id FROM reports WHERE day = %(day)s::date))
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= %(now)s
      AND (%(day)s::date IS NULL
           OR report_pk IN (SELECT id FROM reports WHERE day = %(day)s::date))
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), chosen AS (
    -- Taken-over leases first, then due rows, `limit` in all.
    SELECT id FROM (
        SELECT id, 0 AS rank FROM expired UNION ALL SELECT id, 1 AS rank FROM due
    ) AS candidates
    ORDER BY rank
    LIMIT %(limit)s
), lost AS (
    -- The instance that held these died mid-attempt: record that its outcome is unknown.
    INSERT INTO delivery_attempts
        (delivery_id, attempt, started_at, finished_at, outcome, reason, owner)
    SELECT e.id, e.attempts, COALESCE(e.last_attempt_at, %(now)s), %(now)s,
           'lease_expired', 'the instance sending it stopped before recording an outcome',
           e.lease_owner
    FROM expired e
    WHERE e.id IN (SELECT id FROM chosen)
), claimed AS (
    UPDATE deliveries d SET
        state = 'sending',
        lease_owner = %(owner)s,
        lease_expires_at = %(now)s + make_interval(secs => %(lease_seconds)s),
        attempts = d.attempts + 1,
        first_attempt_at = COALESCE(d.first_attempt_at, %(now)s),
        last_attempt_at = %(now)s
    FROM reports r
    WHERE r.id = d.report_pk AND d.id IN (SELECT id FROM chosen)
    RETURNING d.id, d.rua, d.kind, d.attempts, d.first_attempt_at, d.last_attempt_at,
              r.report_id, r.day, r.policy_domain, r.filename, r.report_gzip
)
SELECT id, rua, kind, attempts, first_attempt_at, last_attempt_at AS started_at,
       report_id, day, policy_domain, filename, report_gzip
FROM claimed ORDER BY id
"""


async def claim_due_deliveries(
    conn: Conn,
    *,
    owner: str,
    now: datetime,
    lease_seconds: float,
    limit: int,
    day: date | None = None,
) -> list[ClaimedDelivery]:
    """Lease up to `limit` due deliveries (plus as many with expired leases) to `owner`."""
    async with conn.cursor(row_factory=class_row(ClaimedDelivery)) as cur:
        await cur.execute(
            _CLAIM,
            {
                "owner": owner,
                "now": now,
                "lease_seconds": lease_seconds,
                "limit": limit,
                "day": day,
            },
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """How one attempt ended, as stored in delivery_attempts."""

    outcome: str  # 'sent' | 'temporary' | 'permanent'
    started_at: datetime
    smtp_reply_code: int | None = None
    http_status: int | None = None
    reason: str | None = None
    excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class MarkRow:
    """A delivery's state after an attempt, and the attempt."""

    delivery_id: int
    state: str  # 'sent' | 'pending' | 'failed'
    attempt: AttemptRecord
    next_attempt_at: datetime | None = None
    last_error: str | None = None


async def mark_deliveries_attempted(
    conn: Conn, *, owner: str, now: datetime, outcomes: list[MarkRow]
) -> set[int]:
    """Set each delivery's state and record its attempt, where the lease is still ours;
    returns the ids recorded. One statement for the whole batch, rows in id order."""
    rows = sorted(outcomes, key=lambda r: r.delivery_id)
    cur = await conn.execute(
        """
        WITH input AS (
            SELECT * FROM unnest(
                %(ids)s::bigint[], %(states)s::text[], %(next)s::timestamptz[],
                %(errors)s::text[], %(outcomes)s::text[], %(started)s::timestamptz[],
                %(smtp)s::integer[], %(http)s::integer[], %(reasons)s::text[],
                %(excerpts)s::text[]
            ) AS t(id, state, next_attempt_at, last_error, outcome, started_at,
                   smtp_reply_code, http_status, reason, excerpt)
        ), marked AS (
            UPDATE deliveries d SET
                state = i.state,
                next_attempt_at = COALESCE(i.next_attempt_at, d.next_attempt_at),
                sent_at = CASE WHEN i.state = 'sent' THEN %(now)s ELSE d.sent_at END,
                last_error = i.last_error,
                lease_owner = NULL,
                lease_expires_at = NULL
            FROM input i
            WHERE d.id = i.id AND d.lease_owner = %(owner)s AND d.state = 'sending'
            RETURNING d.id, d.attempts
        ), attempt AS (
            INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at,
                outcome, smtp_reply_code, http_status, reason, excerpt, owner)
            SELECT m.id, m.attempts, i.started_at, %(now)s, i.outcome, i.smtp_reply_code,
                   i.http_status, i.reason, i.excerpt, %(owner)s
            FROM marked m JOIN input i ON i.id = m.id
            ORDER BY m.id
        )
        SELECT id FROM marked
        """,
        {
            "owner": owner,
            "now": now,
            "ids": [r.delivery_id for r in rows],
            "states": [r.state for r in rows],
            "next": [r.next_attempt_at for r in rows],
            "errors": [r.last_error for r in rows],
            "outcomes": [r.attempt.outcome for r in rows],
            "started": [r.attempt.started_at for r in rows],
            "smtp": [r.attempt.smtp_reply_code for r in rows],
            "http": [r.attempt.http_status for r in rows],
            "reasons": [r.attempt.reason for r in rows],
            "excerpts": [r.attempt.excerpt for r in rows],
        },
    )
    return {int(row[0]) for row in await cur.fetchall()}


async def mark_due_deliveries_settled(
    conn: Conn, *, now: datetime, sending: bool, dkim: bool
) -> dict[str, int]:
    """End due deliveries that will not be attempted; counts per new state.

    'disabled' when sending is switched off, 'no_dkim_key' for mail without a DKIM key,
    'suppressed' when an unexpired suppression names the rua.
    """
    counts: dict[str, int] = {}
    params = {"now": now}
    if not sending:
        cur = await conn.execute(
            """
            UPDATE deliveries SET state = 'disabled',
                last_error = 'sending is switched off (TLSRPT_SEND_REPORTS=false)'
            WHERE state = 'pending' AND next_attempt_at <= %(now)s
            """,
            params,
        )
        counts["disabled"] = cur.rowcount
        return counts
    if not dkim:
        cur = await conn.execute(
            """
            UPDATE deliveries SET state = 'no_dkim_key',
                last_error = 'no DKIM key configured (TLSRPT_DKIM__SELECTOR, '
                             'TLSRPT_DKIM__PRIVATE_KEY_FILE): mail reports are not sent'
            WHERE state = 'pending' AND kind = 'mailto'
              AND next_attempt_at <= %(now)s
            """,
            params,
        )
        counts["no_dkim_key"] = cur.rowcount
    cur = await conn.execute(
        """
        UPDATE deliveries d SET state = 'suppressed',
            last_error = CASE s.source WHEN 'bounces' THEN 'suppressed after bounces: '
                              ELSE 'suppressed by the operator: ' END || s.comment
        FROM suppressions s
        WHERE d.state = 'pending' AND d.next_attempt_at <= %(now)s
          AND s.target = d.rua
          AND (s.expires_at IS NULL OR s.expires_at > %(now)s)
        """,
        params,
    )
    counts["suppressed"] = cur.rowcount
    return counts


async def mark_day_deliveries_due(conn: Conn, *, day: date, now: datetime) -> int:
    """Move a day's never-attempted pending deliveries to now (`tlsrpt send`); returns how
    many of the day's deliveries are pending."""
    await conn.execute(
        """
        UPDATE deliveries SET next_attempt_at = %(now)s
        WHERE state = 'pending' AND attempts = 0
          AND next_attempt_at > %(now)s
          AND report_pk IN (SELECT id FROM reports WHERE day = %(day)s)
        """,
        {"day": day, "now": now},
    )
    cur = await conn.execute(
        """
        SELECT count(*) FROM deliveries
        WHERE state = 'pending' AND report_pk IN (SELECT id FROM reports WHERE day = %(day)s)
        """,
        {"day": day},
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    report_pk: int
    report_id: str
    day: date
    policy_domain: str
    rua: str
    kind: str
    state: str
    attempts: int
    next_attempt_at: datetime
    first_attempt_at: datetime | None
    last_attempt_at: datetime | None
    sent_at: datetime | None
    last_error: str | None


async def list_deliveries(
    conn: Conn,
    *,
    state: str | None = None,
    day: date | None = None,
    report_pks: list[int] | None = None,
    after_id: int = 0,
    limit: int | None = None,
) -> list[DeliveryRow]:
    """Deliveries in id order, filtered by state, report day and report, from `after_id`
    on."""
    async with conn.cursor(row_factory=class_row(DeliveryRow)) as cur:
        await cur.execute(
            """
            SELECT d.id, d.report_pk, r.report_id, r.day, r.policy_domain, d.rua, d.kind,
                   d.state, d.attempts, d.next_attempt_at, d.first_attempt_at,
                   d.last_attempt_at, d.sent_at, d.last_error
            FROM deliveries d JOIN reports r ON r.id = d.report_pk
            WHERE d.id > %(after_id)s
              AND (%(state)s::text IS NULL OR d.state = %(state)s::text)
              AND (%(day)s::date IS NULL OR r.day = %(day)s::date)
              AND (%(pks)s::bigint[] IS NULL OR d.report_pk = ANY(%(pks)s::bigint[]))
            ORDER BY d.id
            LIMIT %(limit)s
            """,
            {"state": state, "day": day, "pks": report_pks, "after_id": after_id, "limit": limit},
        )
        return await cur.fetchall()


async def get_report_exists(conn: Conn, report_pk: int) -> bool:
    cur = await conn.execute("SELECT 1 FROM reports WHERE id = %(pk)s", {"pk": report_pk})
    return await cur.fetchone() is not None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: int
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    smtp_reply_code: int | None
    http_status: int | None
    reason: str | None
    excerpt: str | None


async def list_attempts(conn: Conn, delivery_ids: list[int]) -> list[AttemptRow]:
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        await cur.execute(
            """
            SELECT delivery_id, attempt, started_at, finished_at, outcome, smtp_reply_code,
                   http_status, reason, excerpt
            FROM delivery_attempts WHERE delivery_id = ANY(%(ids)s)
            ORDER BY delivery_id, id
            """,
            {"ids": delivery_ids},
        )
        return await cur.fetchall()


async def count_deliveries_by_state(conn: Conn) -> dict[str, int]:
    cur = await conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
    return {state: int(n) for state, n in await cur.fetchall()}


async def count_retrying_deliveries(conn: Conn) -> int:
    """Pending deliveries that have been tried already (waiting for their next attempt)."""
    cur = await conn.execute(
        "SELECT count(*) FROM deliveries WHERE state = 'pending' AND attempts > 0"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# States an operator may send again now ('sent' is done, 'sending' is someone's).
RETRYABLE_STATES = ["pending", "failed", "suppressed", "no_dkim_key", "disabled"]


async def mark_delivery_due(conn: Conn, delivery_id: int, *, now: datetime) -> bool:
    """Make one delivery due now with a fresh retry window; False when it is not there or
    in a state that can not be retried."""
    cur = await conn.execute(
        """
        UPDATE deliveries
        SET state = 'pending', next_attempt_at = %(now)s, first_attempt_at = NULL
        WHERE id = %(id)s AND state = ANY(%(states)s::text[])
        """,
        {"id": delivery_id, "now": now, "states": RETRYABLE_STATES},
    )
    return cur.rowcount > 0
