"""SQL for received reports (inbound_reports, inbound_policies, inbound_failures).

A report is written in one statement: the report row (its unique key settles
duplicates) and, when it is new, all its policies and failure details as multi-row
inserts from JSON record sets. Summaries aggregate in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class ReportFilter:
    domain: str | None = None
    organization: str | None = None
    from_day: date | None = None
    to_day: date | None = None
    has_failures: bool | None = None
    before_id: int | None = None
    limit: int = 100


def _jsonb(value: object) -> Jsonb:
    return Jsonb(value, dumps=orjson.dumps)


async def insert_report(
    conn: Conn,
    report: dict[str, Any],
    policies: list[dict[str, Any]],
    failures: list[dict[str, Any]],
) -> tuple[int, bool]:
    """Store a report with its policies and failure details, in one statement.

    On an (organization, report-id) conflict only the resend is counted. Returns the
    row id and whether this call inserted it. One statement is one round trip and
    atomic on its own; the failure rows' foreign keys are checked at its end, after the
    sibling policy rows exist.
    """
    params = dict(
        report,
        extra=_jsonb(report["extra"]) if report["extra"] else None,
        policies=_jsonb(policies),
        failures=_jsonb(failures),
    )
    cur = await conn.execute(
        """
        WITH r AS (
            INSERT INTO inbound_reports AS r (organization_name, report_id, contact_info,
                start_at, end_at, day, policy_domains, policy_count, success_count,
                failure_count, has_failures, received_via, report_json, extra, mail_from,
                mail_subject, mail_message_id, mail_report_domain, mail_submitter,
                mail_filename, dkim_verdict, dkim_domain, dkim_reason)
            VALUES (%(organization_name)s, %(report_id)s, %(contact_info)s, %(start_at)s,
                %(end_at)s, %(day)s,
                ARRAY(SELECT DISTINCT x.policy_domain
                    FROM jsonb_to_recordset(%(policies)s) AS x(policy_domain text) ORDER BY 1),
                %(policy_count)s,
                %(success_count)s, %(failure_count)s, %(has_failures)s, %(received_via)s,
                %(report_json)s, %(extra)s, %(mail_from)s, %(mail_subject)s,
                %(mail_message_id)s, %(mail_report_domain)s, %(mail_submitter)s,
                %(mail_filename)s, %(dkim_verdict)s, %(dkim_domain)s, %(dkim_reason)s)
            ON CONFLICT (organization_name, report_id) DO UPDATE SET
                times_received = r.times_received + 1, last_received_at = now()
            RETURNING id, (xmax = 0) AS inserted
        ), p AS (
            INSERT INTO inbound_policies (report_pk, position, policy_type, policy_domain,
                policy_string, mx_host, success_count, failure_count, extra)
            SELECT r.id, x.position, x.policy_type, x.policy_domain, x.policy_string,
                x.mx_host, x.success_count, x.failure_count, x.extra
            FROM r, jsonb_to_recordset(%(policies)s) AS x(position integer,
                policy_type text, policy_domain text, policy_string text[], mx_host text[],
                success_count bigint, failure_count bigint, extra jsonb)
            WHERE r.inserted
        ), f AS (
            INSERT INTO inbound_failures (report_pk, policy_position, position,
                result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo,
                receiving_ip, additional_information, failure_reason_code,
                failed_session_count, extra)
            SELECT r.id, x.policy_position, x.position, x.result_type, x.sending_mta_ip,
                x.receiving_mx_hostname, x.receiving_mx_helo, x.receiving_ip,
                x.additional_information, x.failure_reason_code, x.failed_session_count,
                x.extra
            FROM r, jsonb_to_recordset(%(failures)s) AS x(policy_position integer,
                position integer, result_type text, sending_mta_ip inet,
                receiving_mx_hostname text, receiving_mx_helo text, receiving_ip inet,
                additional_information text, failure_reason_code text,
                failed_session_count bigint, extra jsonb)
            WHERE r.inserted
        )
        SELECT id, inserted FROM r
        """,
        params,
    )
    found = await cur.fetchone()
    assert found is not None
    return int(found[0]), bool(found[1])  # type: ignore[call-overload]


async def list_reports(conn: Conn, where: ReportFilter) -> list[dict[str, Any]]:
    """Reports newest first (by id), filtered; `before_id` pages backwards."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT id, organization_name, report_id, contact_info, start_at, end_at, day,
                policy_domains, policy_count, success_count, failure_count, has_failures,
                received_via, received_at, times_received, last_received_at, mail_from,
                mail_subject, mail_message_id, mail_report_domain, mail_submitter,
                mail_filename, dkim_verdict, dkim_domain, dkim_reason
            FROM inbound_reports
            WHERE (%(domain)s::text IS NULL OR id IN (
                    SELECT report_pk FROM inbound_policies WHERE policy_domain = %(domain)s))
              AND (%(organization)s::text IS NULL OR organization_name = %(organization)s)
              AND (%(from_day)s::date IS NULL OR day >= %(from_day)s)
              AND (%(to_day)s::date IS NULL OR day <= %(to_day)s)
              AND (%(has_failures)s::boolean IS NULL OR has_failures = %(has_failures)s)
              AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s)
            ORDER BY id DESC
            LIMIT %(limit)s
            """,
            {
                "domain": where.domain,
                "organization": where.organization,
                "from_day": where.from_day,
                "to_day": where.to_day,
                "has_failures": where.has_failures,
                "before_id": where.before_id,
                "limit": where.limit,
            },
        )
        return await cur.fetchall()


async def get_report(conn: Conn, report_pk: int) -> dict[str, Any] | None:
    """One report with its original JSON (`report_json`)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT id, organization_name, report_id, contact_info, start_at, end_at, day,
                policy_domains, policy_count, success_count, failure_count, has_failures,
                received_via, received_at, times_received, last_received_at, mail_from,
                mail_subject, mail_message_id, mail_report_domain, mail_submitter,
                mail_filename, dkim_verdict, dkim_domain, dkim_reason, report_json
            FROM inbound_reports WHERE id = %(id)s
            """,
            {"id": report_pk},
        )
        return await cur.fetchone()


async def list_summary_sessions(
    conn: Conn, domain: str, from_day: date, to_day: date
) -> list[tuple[date, str, int, int, int]]:
    """(day, organization, reports, successful sessions, failed sessions) of one policy
    domain over a range of days."""
    cur = await conn.execute(
        """
        SELECT r.day, r.organization_name, count(DISTINCT r.id), sum(p.success_count),
            sum(p.failure_count)
        FROM inbound_policies p JOIN inbound_reports r ON r.id = p.report_pk
        WHERE p.policy_domain = %(domain)s AND r.day BETWEEN %(from_day)s AND %(to_day)s
        GROUP BY r.day, r.organization_name
        ORDER BY r.day, r.organization_name
        """,
        {"domain": domain, "from_day": from_day, "to_day": to_day},
    )
    return [(d, o, int(n), int(ok), int(bad)) for d, o, n, ok, bad in await cur.fetchall()]  # type: ignore[misc, call-overload]


async def list_summary_failures(
    conn: Conn, domain: str, from_day: date, to_day: date
) -> list[tuple[date, str, str, str | None, str | None, str | None, int]]:
    """(day, organization, result type, MX host, receiving IP, sending IP, sessions)."""
    cur = await conn.execute(
        """
        SELECT r.day, r.organization_name, f.result_type, f.receiving_mx_hostname,
            host(f.receiving_ip), host(f.sending_mta_ip),
            sum(f.failed_session_count)
        FROM inbound_failures f
        JOIN inbound_policies p ON p.report_pk = f.report_pk AND p.position = f.policy_position
        JOIN inbound_reports r ON r.id = f.report_pk
        WHERE p.policy_domain = %(domain)s AND r.day BETWEEN %(from_day)s AND %(to_day)s
        GROUP BY 1, 2, 3, 4, 5, 6
        ORDER BY 1, 2, 3, 4 NULLS LAST, 5 NULLS LAST, 6 NULLS LAST
        """,
        {"domain": domain, "from_day": from_day, "to_day": to_day},
    )
    return [(*row[:6], int(row[6])) for row in await cur.fetchall()]  # type: ignore[call-overload]
