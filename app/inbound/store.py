"""SQL for received reports (inbound_reports, inbound_policies, inbound_failures).

Reports are written many at a time, in one statement: the report rows (their unique
key settles duplicates) and, for those that are new, all their policies and failure
details as multi-row inserts from JSON record sets. Summaries aggregate in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report's row (the columns of inbound_reports), its policy and failure rows, and
    how many copies of it arrived together (counted in times_received)."""

    row: dict[str, Any]
    policies: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    copies: int = 1

    @property
    def key(self) -> tuple[str, str]:
        return self.row["organization_name"], self.row["report_id"]


# The report columns passed as one array each, in the order of `_INSERT_REPORTS`.
_REPORT_COLUMNS = (
    "organization_name", "report_id", "contact_info", "start_at", "end_at", "day",
    "policy_count", "success_count", "failure_count", "has_failures", "received_via",
    "report_json", "mail_from", "mail_subject", "mail_message_id", "mail_report_domain",
    "mail_submitter", "mail_filename", "dkim_verdict", "dkim_domain", "dkim_reason",
)  # fmt: skip

_INSERT_REPORTS = """
    WITH x AS (
        SELECT * FROM unnest(%(organization_name)s::text[], %(report_id)s::text[],
            %(contact_info)s::text[], %(start_at)s::timestamptz[], %(end_at)s::timestamptz[],
            %(day)s::date[], %(policy_count)s::integer[], %(success_count)s::numeric[],
            %(failure_count)s::numeric[], %(has_failures)s::boolean[],
            %(received_via)s::text[], %(report_json)s::bytea[], %(mail_from)s::text[],
            %(mail_subject)s::text[], %(mail_message_id)s::text[],
            %(mail_report_domain)s::text[], %(mail_submitter)s::text[],
            %(mail_filename)s::text[], %(dkim_verdict)s::text[], %(dkim_domain)s::text[],
            %(dkim_reason)s::text[], %(extra)s::jsonb[], %(policies)s::jsonb[],
            %(failures)s::jsonb[], %(copies)s::integer[])
        WITH ORDINALITY AS x(organization_name, report_id, contact_info, start_at, end_at,
            day, policy_count, success_count, failure_count, has_failures, received_via,
            report_json, mail_from, mail_subject, mail_message_id, mail_report_domain,
            mail_submitter, mail_filename, dkim_verdict, dkim_domain, dkim_reason, extra,
            policies, failures, copies, n)
    ), r AS (
        INSERT INTO inbound_reports AS r (organization_name, report_id, contact_info,
            start_at, end_at, day, policy_domains, policy_count, success_count,
            failure_count, has_failures, received_via, report_json, extra, mail_from,
            mail_subject, mail_message_id, mail_report_domain, mail_submitter,
            mail_filename, dkim_verdict, dkim_domain, dkim_reason, times_received)
        SELECT organization_name, report_id, contact_info, start_at, end_at, day,
            ARRAY(SELECT DISTINCT y.policy_domain
                FROM jsonb_to_recordset(x.policies) AS y(policy_domain text) ORDER BY 1),
            policy_count, success_count, failure_count, has_failures, received_via,
            report_json, extra, mail_from, mail_subject, mail_message_id,
            mail_report_domain, mail_submitter, mail_filename, dkim_verdict, dkim_domain,
            dkim_reason, copies
        FROM x
        -- One key order for every writer: concurrent groups never deadlock.
        ORDER BY organization_name, report_id
        ON CONFLICT (organization_name, report_id) DO UPDATE SET
            times_received = r.times_received + EXCLUDED.times_received,
            last_received_at = now()
        RETURNING id, organization_name, report_id, (xmax = 0) AS inserted
    ), k AS (
        SELECT x.n, r.id, r.inserted, x.policies, x.failures
        FROM r JOIN x USING (organization_name, report_id)
    ), p AS (
        INSERT INTO inbound_policies (report_pk, position, policy_type, policy_domain,
            policy_string, mx_host, success_count, failure_count, extra)
        SELECT k.id, y.position, y.policy_type, y.policy_domain, y.policy_string,
            y.mx_host, y.success_count, y.failure_count, y.extra
        FROM k, jsonb_to_recordset(k.policies) AS y(position integer, policy_type text,
            policy_domain text, policy_string text[], mx_host text[], success_count bigint,
            failure_count bigint, extra jsonb)
        WHERE k.inserted
    ), f AS (
        INSERT INTO inbound_failures (report_pk, policy_position, position, result_type,
            sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip,
            additional_information, failure_reason_code, failed_session_count, extra)
        SELECT k.id, y.policy_position, y.position, y.result_type, y.sending_mta_ip,
            y.receiving_mx_hostname, y.receiving_mx_helo, y.receiving_ip,
            y.additional_information, y.failure_reason_code, y.failed_session_count,
            y.extra
        FROM k, jsonb_to_recordset(k.failures) AS y(policy_position integer,
            position integer, result_type text, sending_mta_ip inet,
            receiving_mx_hostname text, receiving_mx_helo text, receiving_ip inet,
            additional_information text, failure_reason_code text,
            failed_session_count bigint, extra jsonb)
        WHERE k.inserted
    )
    SELECT n, id, inserted FROM k
"""


async def insert_reports(conn: Conn, reports: Sequence[NewReport]) -> list[tuple[int, bool]]:
    """Store reports with their policies and failure details, in one statement.

    Keys (organization, report-id) must be distinct. A report whose key is already
    stored only counts its copies as resends. Returns, in the order given, each row id
    and whether this call inserted it. One statement is one round trip and atomic; the
    failure rows' foreign keys are checked at its end, after their policy rows exist.
    """
    params: dict[str, Any] = {name: [r.row[name] for r in reports] for name in _REPORT_COLUMNS}
    params["extra"] = [_jsonb(r.row["extra"]) if r.row["extra"] else None for r in reports]
    # Each report's policies and failure details as one JSON record set.
    params["policies"] = [_jsonb(r.policies) for r in reports]
    params["failures"] = [_jsonb(r.failures) for r in reports]
    params["copies"] = [r.copies for r in reports]
    cur = await conn.execute(_INSERT_REPORTS, params)
    found = {int(n): (int(pk), bool(new)) for n, pk, new in await cur.fetchall()}  # type: ignore[call-overload]
    return [found[n] for n in range(1, len(reports) + 1)]


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
