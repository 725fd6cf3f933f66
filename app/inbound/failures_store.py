"""SQL for what the alerts and metrics read of received reports (recent ones only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class DomainFailures:
    """One of our policy domains in the reports received since a time."""

    policy_domain: str
    success_count: int
    failure_count: int
    result_types: list[str]
    mx_hosts: list[str]
    organizations: list[str]
    report_ids: list[str]


async def list_domain_failures(
    conn: Conn, *, since: datetime, min_failures: int
) -> list[DomainFailures]:
    """Policy domains with at least `min_failures` failed sessions in reports received
    (or received again) since `since`, with what failed, where, and who reported it."""
    async with conn.cursor(row_factory=class_row(DomainFailures)) as cur:
        await cur.execute(
            """
            WITH recent AS (
                SELECT id, organization_name, report_id FROM inbound_reports
                WHERE last_received_at >= %(since)s
            ), domains AS (
                SELECT p.policy_domain, sum(p.success_count)::bigint AS ok,
                       sum(p.failure_count)::bigint AS failed,
                       array_agg(DISTINCT r.organization_name ORDER BY r.organization_name)
                           FILTER (WHERE p.failure_count > 0) AS orgs,
                       array_agg(DISTINCT r.report_id ORDER BY r.report_id)
                           FILTER (WHERE p.failure_count > 0) AS ids
                FROM recent r JOIN inbound_policies p ON p.report_pk = r.id
                GROUP BY p.policy_domain
                HAVING sum(p.failure_count) >= %(min)s
            ), details AS (
                SELECT p.policy_domain,
                       array_agg(DISTINCT f.result_type ORDER BY f.result_type) AS types,
                       array_agg(DISTINCT f.receiving_mx_hostname
                                 ORDER BY f.receiving_mx_hostname)
                           FILTER (WHERE f.receiving_mx_hostname IS NOT NULL) AS hosts
                FROM recent r
                JOIN inbound_policies p ON p.report_pk = r.id
                JOIN inbound_failures f
                  ON f.report_pk = r.id AND f.policy_position = p.position
                WHERE p.policy_domain IN (SELECT policy_domain FROM domains)
                GROUP BY p.policy_domain
            )
            SELECT d.policy_domain, d.ok AS success_count, d.failed AS failure_count,
                   coalesce(x.types, '{}') AS result_types,
                   coalesce(x.hosts, '{}') AS mx_hosts,
                   coalesce(d.orgs, '{}') AS organizations,
                   coalesce(d.ids, '{}') AS report_ids
            FROM domains d LEFT JOIN details x USING (policy_domain)
            ORDER BY d.policy_domain
            """,
            {"since": since, "min": min_failures},
        )
        return await cur.fetchall()


async def list_sessions_by_label(conn: Conn, since: datetime) -> list[tuple[str, str, str, int]]:
    """(policy domain, organization, result type, sessions) over reports received since
    `since`; `success` rows from the policies' summaries, the rest from failure details."""
    cur = await conn.execute(
        """
        WITH recent AS (
            SELECT id, organization_name FROM inbound_reports
            WHERE last_received_at >= %(since)s
        )
        SELECT p.policy_domain, r.organization_name, 'success', sum(p.success_count)::bigint
        FROM recent r JOIN inbound_policies p ON p.report_pk = r.id
        GROUP BY 1, 2
        UNION ALL
        SELECT p.policy_domain, r.organization_name, f.result_type,
               sum(f.failed_session_count)::bigint
        FROM recent r
        JOIN inbound_policies p ON p.report_pk = r.id
        JOIN inbound_failures f ON f.report_pk = r.id AND f.policy_position = p.position
        GROUP BY 1, 2, 3
        """,
        {"since": since},
    )
    return [(str(a), str(b), str(c), int(n or 0)) for a, b, c, n in await cur.fetchall()]


async def list_report_counts(conn: Conn, since: datetime) -> list[tuple[str, str, int]]:
    """(channel, DKIM verdict or 'none', reports) received since `since`."""
    cur = await conn.execute(
        """
        SELECT received_via, coalesce(dkim_verdict, 'none'), count(*)
        FROM inbound_reports WHERE last_received_at >= %(since)s
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        {"since": since},
    )
    return [(str(a), str(b), int(n)) for a, b, n in await cur.fetchall()]


async def list_newest_by_organization(conn: Conn, limit: int) -> list[tuple[str, datetime]]:
    """The newest receipt time per organization, the `limit` most recent."""
    cur = await conn.execute(
        """
        SELECT organization_name, max(last_received_at) AS newest
        FROM inbound_reports GROUP BY 1 ORDER BY newest DESC, 1 LIMIT %(limit)s
        """,
        {"limit": limit},
    )
    return [(str(a), b) for a, b in await cur.fetchall()]
