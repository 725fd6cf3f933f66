"""SQL for report building: per-domain outcomes, built reports and their delivery rows.

Writes are multi-row statements over `unnest` arrays, rows sorted by policy domain so
concurrent builders lock in one order. The unique keys (day, policy_domain) make a
second build of the same day a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import orjson
from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class DomainState:
    """A `report_domains` row: what building decided for one (day, policy domain)."""

    day: date
    policy_domain: str
    state: str
    reason: str | None
    detail: str | None
    attempts: int
    first_attempt_at: datetime | None
    next_attempt_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report to insert with one delivery per usable rua (`rua` and `kinds` align)."""

    report_id: str
    policy_domain: str
    report_json: bytes
    report_gzip: bytes
    filename: str
    rua: tuple[str, ...]
    kinds: tuple[str, ...]
    delays: tuple[float, ...]  # seconds after the build for each delivery's first attempt
    # The record's rua this service can not use: (uri, reason), kept for operators.
    unusable: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredReport:
    id: int
    report_id: str
    day: date
    policy_domain: str
    created_at: datetime
    filename: str
    rua: list[str]
    report_json: bytes
    report_gzip: bytes
    # [{"rua": ..., "reason": ...}]: the record's rua not used, and why; None: none.
    unusable_rua: list[dict[str, str]] | None = None


async def list_report_domains(conn: Conn, day: date) -> list[DomainState]:
    async with conn.cursor(row_factory=class_row(DomainState)) as cur:
        await cur.execute(
            """
            SELECT day, policy_domain, state, reason, detail, attempts, first_attempt_at,
                next_attempt_at, updated_at
            FROM report_domains WHERE day = %(day)s ORDER BY policy_domain
            """,
            {"day": day},
        )
        return await cur.fetchall()


async def get_report_domain(conn: Conn, day: date, policy_domain: str) -> DomainState | None:
    async with conn.cursor(row_factory=class_row(DomainState)) as cur:
        await cur.execute(
            """
            SELECT day, policy_domain, state, reason, detail, attempts, first_attempt_at,
                next_attempt_at, updated_at
            FROM report_domains WHERE day = %(day)s AND policy_domain = %(domain)s
            """,
            {"day": day, "domain": policy_domain},
        )
        return await cur.fetchone()


async def upsert_report_domains(
    conn: Conn, day: date, rows: Sequence[DomainState], now: datetime
) -> set[str]:
    """Record outcomes for domains still open; returns the domains this call settled.

    A row another builder already settled (not 'pending') is left alone and not
    returned: that builder owns its report.
    """
    rows = sorted(rows, key=lambda r: r.policy_domain)
    cur = await conn.execute(
        """
        INSERT INTO report_domains AS d (day, policy_domain, state, reason, detail, attempts,
            first_attempt_at, next_attempt_at, updated_at)
        SELECT %(day)s, t.policy_domain, t.state, t.reason, t.detail, t.attempts,
            t.first_attempt_at, t.next_attempt_at, %(now)s
        FROM unnest(%(domain)s::text[], %(state)s::text[], %(reason)s::text[],
            %(detail)s::text[], %(attempts)s::int[], %(first)s::timestamptz[],
            %(next)s::timestamptz[])
            AS t(policy_domain, state, reason, detail, attempts, first_attempt_at,
                next_attempt_at)
        ORDER BY t.policy_domain
        ON CONFLICT (day, policy_domain) DO UPDATE SET
            state = EXCLUDED.state, reason = EXCLUDED.reason, detail = EXCLUDED.detail,
            attempts = EXCLUDED.attempts, first_attempt_at = EXCLUDED.first_attempt_at,
            next_attempt_at = EXCLUDED.next_attempt_at, updated_at = %(now)s
        WHERE d.state = 'pending'
        RETURNING d.policy_domain
        """,
        {
            "day": day,
            "now": now,
            "domain": [r.policy_domain for r in rows],
            "state": [r.state for r in rows],
            "reason": [r.reason for r in rows],
            "detail": [r.detail for r in rows],
            "attempts": [r.attempts for r in rows],
            "first": [r.first_attempt_at for r in rows],
            "next": [r.next_attempt_at for r in rows],
        },
    )
    return {str(row[0]) for row in await cur.fetchall()}


async def insert_reports(conn: Conn, day: date, reports: Sequence[NewReport], now: datetime) -> int:
    """Insert reports and their deliveries in one statement; returns reports inserted.
    Each delivery is first due `delay` seconds after `now`.

    The bodies travel in binary (`%(json)b`): text format would hex-escape every byte.
    """
    if not reports:
        return 0
    reports = sorted(reports, key=lambda r: r.policy_domain)
    deliveries = [
        (r.policy_domain, u, k, d)
        for r in reports
        for u, k, d in zip(r.rua, r.kinds, r.delays, strict=True)
    ]
    cur = await conn.execute(
        """
        WITH inserted AS (
            INSERT INTO reports (report_id, day, policy_domain, report_json, report_gzip,
                filename, rua, unusable_rua, created_at)
            SELECT t.report_id, %(day)s, t.policy_domain, t.report_json, t.report_gzip,
                t.filename, string_to_array(t.rua, ' '), t.unusable::jsonb, %(now)s
            FROM unnest(%(report_id)s::text[], %(domain)s::text[], %(json)b::bytea[],
                %(gzip)b::bytea[], %(filename)s::text[], %(rua)s::text[],
                %(unusable)s::text[])
                AS t(report_id, policy_domain, report_json, report_gzip, filename, rua,
                    unusable)
            ORDER BY t.policy_domain
            ON CONFLICT DO NOTHING
            RETURNING id, policy_domain
        ), delivered AS (
            INSERT INTO deliveries (report_pk, rua, kind, next_attempt_at, created_at)
            SELECT i.id, d.rua, d.kind, %(now)s + make_interval(secs => d.delay), %(now)s
            FROM inserted i
            JOIN unnest(%(d_domain)s::text[], %(d_rua)s::text[], %(d_kind)s::text[],
                %(d_delay)s::float8[]) AS d(policy_domain, rua, kind, delay)
                USING (policy_domain)
            ON CONFLICT DO NOTHING
        )
        SELECT count(*) FROM inserted
        """,
        {
            "day": day,
            "now": now,
            "report_id": [r.report_id for r in reports],
            "domain": [r.policy_domain for r in reports],
            "json": [r.report_json for r in reports],
            "gzip": [r.report_gzip for r in reports],
            "filename": [r.filename for r in reports],
            # URIs never contain spaces (RFC 8460 §3 grammar, checked when parsed).
            "rua": [" ".join(r.rua) for r in reports],
            "unusable": [
                orjson.dumps([{"rua": u, "reason": why} for u, why in r.unusable]).decode()
                if r.unusable
                else None
                for r in reports
            ],
            "d_domain": [d[0] for d in deliveries],
            "d_rua": [d[1] for d in deliveries],
            "d_kind": [d[2] for d in deliveries],
            "d_delay": [d[3] for d in deliveries],
        },
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


async def get_report(conn: Conn, pk: int) -> StoredReport | None:
    async with conn.cursor(row_factory=class_row(StoredReport)) as cur:
        await cur.execute(
            """
            SELECT id, report_id, day, policy_domain, created_at, filename, rua, report_json,
                report_gzip, unusable_rua
            FROM reports WHERE id = %(id)s
            """,
            {"id": pk},
        )
        return await cur.fetchone()


async def get_report_by_domain(conn: Conn, day: date, policy_domain: str) -> StoredReport | None:
    async with conn.cursor(row_factory=class_row(StoredReport)) as cur:
        await cur.execute(
            """
            SELECT id, report_id, day, policy_domain, created_at, filename, rua, report_json,
                report_gzip, unusable_rua
            FROM reports WHERE day = %(day)s AND policy_domain = %(domain)s
            """,
            {"day": day, "domain": policy_domain},
        )
        return await cur.fetchone()


async def list_reports(conn: Conn, day: date) -> list[StoredReport]:
    """A day's reports without their bodies (report_json and report_gzip left empty)."""
    async with conn.cursor(row_factory=class_row(StoredReport)) as cur:
        await cur.execute(
            """
            SELECT id, report_id, day, policy_domain, created_at, filename, rua,
                ''::bytea AS report_json, ''::bytea AS report_gzip, unusable_rua
            FROM reports WHERE day = %(day)s ORDER BY policy_domain
            """,
            {"day": day},
        )
        return await cur.fetchall()


async def delete_reports_before(conn: Conn, day: date) -> int:
    """Retention: drop reports (their deliveries cascade) and outcomes of older days."""
    cur = await conn.execute("DELETE FROM reports WHERE day < %(day)s", {"day": day})
    await conn.execute("DELETE FROM report_domains WHERE day < %(day)s", {"day": day})
    return cur.rowcount


@dataclass(frozen=True, slots=True)
class DomainOutcome:
    """A domain's build outcome with its report's id, for the web pages."""

    policy_domain: str
    state: str
    reason: str | None
    report_pk: int | None


async def list_domain_outcomes(
    conn: Conn, day: date, policy_domains: Sequence[str]
) -> list[DomainOutcome]:
    async with conn.cursor(row_factory=class_row(DomainOutcome)) as cur:
        await cur.execute(
            """
            SELECT d.policy_domain, d.state, d.reason, r.id AS report_pk
            FROM report_domains d
            LEFT JOIN reports r ON r.day = d.day AND r.policy_domain = d.policy_domain
            WHERE d.day = %(day)s AND d.policy_domain = ANY(%(domains)s::text[])
            """,
            {"day": day, "domains": list(policy_domains)},
        )
        return await cur.fetchall()


async def count_report_domains_by_state(conn: Conn, days: Sequence[date]) -> dict[str, int]:
    cur = await conn.execute(
        """
        SELECT state, count(*) FROM report_domains WHERE day = ANY(%(days)s::date[])
        GROUP BY state
        """,
        {"days": list(days)},
    )
    return {state: int(n) for state, n in cast(list[tuple[Any, ...]], await cur.fetchall())}
