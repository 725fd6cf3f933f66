"""SQL for received reports (inbound_reports; the views inbound_policies, inbound_failures).

Reports are written many at a time, in one statement; a report is one row, its policies
and failure details JSON record sets on it, and its unique key settles duplicates.
Summaries aggregate in SQL, finding a domain's reports by the GIN index on their policy
domains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

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


# The report columns passed as one array each (binary: text arrays of bytea or JSON are
# slow to build), in the order of `_INSERT_REPORTS`.
_REPORT_COLUMNS = (
    "organization_name", "report_id", "contact_info", "start_at", "end_at", "day",
    "policy_count", "success_count", "failure_count", "has_failures", "received_via",
    "report_json", "mail_from", "mail_subject", "mail_message_id", "mail_report_domain",
    "mail_submitter", "mail_filename", "dkim_verdict", "dkim_domain", "dkim_reason",
)  # fmt: skip

_INSERT_REPORTS = """
    INSERT INTO inbound_reports AS r (organization_name, report_id, contact_info, start_at,
        end_at, day, policy_domains, policy_count, success_count, failure_count,
        has_failures, policies, failures, received_via, report_json, extra, warnings, mail_from,
        mail_subject, mail_message_id, mail_report_domain, mail_submitter, mail_filename,
        dkim_verdict, dkim_domain, dkim_reason, times_received, received_at,
        last_received_at)
    SELECT organization_name, report_id, contact_info, start_at, end_at, day,
        ARRAY(SELECT DISTINCT y FROM jsonb_array_elements_text(d -> 'domains') AS y
            ORDER BY 1),
        policy_count, success_count, failure_count, has_failures, d -> 'policies',
        d -> 'failures', received_via, report_json, d -> 'extra', d -> 'warnings', mail_from,
        mail_subject,
        mail_message_id, mail_report_domain, mail_submitter, mail_filename, dkim_verdict,
        dkim_domain, dkim_reason, copies, %(now)s, %(now)s
    FROM (
        SELECT u.*, %(details)s::jsonb -> (u.n::integer - 1) AS d
        FROM unnest(%(organization_name)b::text[], %(report_id)b::text[],
            %(contact_info)b::text[], %(start_at)b::timestamptz[], %(end_at)b::timestamptz[],
            %(day)b::date[], %(policy_count)b::integer[], %(success_count)b::numeric[],
            %(failure_count)b::numeric[], %(has_failures)b::boolean[],
            %(received_via)b::text[], %(report_json)b::bytea[], %(mail_from)b::text[],
            %(mail_subject)b::text[], %(mail_message_id)b::text[],
            %(mail_report_domain)b::text[], %(mail_submitter)b::text[],
            %(mail_filename)b::text[], %(dkim_verdict)b::text[], %(dkim_domain)b::text[],
            %(dkim_reason)b::text[], %(copies)b::integer[])
        WITH ORDINALITY AS u(organization_name, report_id, contact_info, start_at, end_at,
            day, policy_count, success_count, failure_count, has_failures, received_via,
            report_json, mail_from, mail_subject, mail_message_id, mail_report_domain,
            mail_submitter, mail_filename, dkim_verdict, dkim_domain, dkim_reason, copies,
            n)
    ) AS x
    -- One key order for every writer: concurrent groups never deadlock.
    ORDER BY organization_name, report_id
    ON CONFLICT (organization_name, report_id) DO UPDATE SET
        times_received = r.times_received + EXCLUDED.times_received,
        last_received_at = EXCLUDED.last_received_at
    RETURNING organization_name, report_id, id, (xmax = 0) AS inserted
"""


async def insert_reports(
    conn: Conn, reports: Sequence[NewReport], *, now: datetime
) -> list[tuple[int, bool]]:
    """Store reports with their policies and failure details, in one statement, received
    at `now`.

    Keys (organization, report-id) must be distinct. A report whose key is already
    stored only counts its copies as resends. Returns, in the order given, each row id
    and whether this call inserted it.
    """
    params: dict[str, Any] = {name: [r.row[name] for r in reports] for name in _REPORT_COLUMNS}
    params["copies"] = [r.copies for r in reports]
    params["now"] = now
    # One JSON document for what is not a column: per report, its policy and failure
    # rows as record sets and its unknown keys (arrays of JSON cost far more to send).
    params["details"] = _jsonb([_details(r) for r in reports])
    cur = await conn.execute(_INSERT_REPORTS, params)
    found = {(o, i): (int(pk), bool(new)) for o, i, pk, new in await cur.fetchall()}  # type: ignore[call-overload]
    return [found[r.key] for r in reports]


def _details(report: NewReport) -> dict[str, Any]:
    details: dict[str, Any] = {
        "policies": report.policies,
        "failures": report.failures,
        # policy_domains (sorted in SQL, in the column's collation) from a few distinct
        # names: cheaper than a record set over every policy.
        "domains": list({p["policy_domain"]: None for p in report.policies}),
    }
    if report.row["extra"]:
        details["extra"] = report.row["extra"]
    if report.row["warnings"]:
        details["warnings"] = report.row["warnings"]
    return details


async def delete_reports_received_before(conn: Conn, cutoff: datetime) -> int:
    """Retention: delete reports first received before `cutoff`; returns how many."""
    cur = await conn.execute(
        "DELETE FROM inbound_reports WHERE received_at < %(cutoff)s", {"cutoff": cutoff}
    )
    return cur.rowcount


async def list_reports(conn: Conn, where: ReportFilter) -> list[dict[str, Any]]:
    """Reports newest first (by id), filtered; `before_id` pages backwards."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT id, organization_name, report_id, contact_info, start_at, end_at, day,
                policy_domains, policy_count, success_count, failure_count, has_failures,
                received_via, received_at, times_received, last_received_at, mail_from,
                mail_subject, mail_message_id, mail_report_domain, mail_submitter,
                mail_filename, dkim_verdict, dkim_domain, dkim_reason, warnings
            FROM inbound_reports
            WHERE (%(domain)s::text IS NULL OR policy_domains @> ARRAY[%(domain)s::text])
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
                mail_filename, dkim_verdict, dkim_domain, dkim_reason, warnings, report_json
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
        FROM inbound_reports r, jsonb_to_recordset(r.policies) AS p(policy_domain text,
            success_count bigint, failure_count bigint)
        WHERE r.policy_domains @> ARRAY[%(domain)s::text] AND p.policy_domain = %(domain)s
          AND r.day BETWEEN %(from_day)s AND %(to_day)s
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
        FROM inbound_reports r
        CROSS JOIN LATERAL jsonb_to_recordset(r.policies) AS p(position integer,
            policy_domain text)
        JOIN LATERAL jsonb_to_recordset(r.failures) AS f(policy_position integer,
            result_type text, sending_mta_ip inet, receiving_mx_hostname text,
            receiving_ip inet, failed_session_count bigint) ON f.policy_position = p.position
        WHERE r.policy_domains @> ARRAY[%(domain)s::text] AND p.policy_domain = %(domain)s
          AND r.day BETWEEN %(from_day)s AND %(to_day)s
        GROUP BY 1, 2, 3, 4, 5, 6
        ORDER BY 1, 2, 3, 4 NULLS LAST, 5 NULLS LAST, 6 NULLS LAST
        """,
        {"domain": domain, "from_day": from_day, "to_day": to_day},
    )
    return [(*row[:6], int(row[6])) for row in await cur.fetchall()]  # type: ignore[call-overload]


# Namespace of the mailbox locks (classid of the two-key advisory lock form).
MAILBOX_LOCK_NAMESPACE = 84_600_017


async def try_lock_mailbox(conn: Conn, key: int) -> bool:
    """Take the session-level lock of one mailbox on this connection; False when another
    session holds it. Committed at once: the connection does not idle in a transaction."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(%(ns)s, %(key)s)",
        {"ns": MAILBOX_LOCK_NAMESPACE, "key": key},
    )
    row = await cur.fetchone()
    await conn.commit()
    return bool(row and row[0])


async def get_mailbox_lock_held(conn: Conn, key: int) -> bool:
    """Whether this connection still holds the mailbox's lock (raises when it is gone)."""
    cur = await conn.execute(
        """
        SELECT EXISTS (
            SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
              AND classid = %(ns)s AND objid = %(key)s AND objsubid = 2)
        """,
        {"ns": MAILBOX_LOCK_NAMESPACE, "key": key},
    )
    row = await cur.fetchone()
    await conn.commit()
    return bool(row and row[0])


async def unlock_mailbox(conn: Conn, key: int) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(%(ns)s, %(key)s)", {"ns": MAILBOX_LOCK_NAMESPACE, "key": key}
    )
    await conn.commit()


# Reading, for the web pages


async def get_totals_since(conn: Conn, from_day: date) -> tuple[int, int, int]:
    """(reports, successful sessions, failed sessions) of reports for days from `from_day`."""
    cur = await conn.execute(
        """
        SELECT count(*), coalesce(sum(success_count), 0), coalesce(sum(failure_count), 0)
        FROM inbound_reports WHERE day >= %(from_day)s
        """,
        {"from_day": from_day},
    )
    row = cast(tuple[Any, ...] | None, await cur.fetchone())
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def list_organization_totals(
    conn: Conn, from_day: date, limit: int
) -> list[tuple[str, int, int, int]]:
    """(sender organization, reports, successful, failed sessions), the most failed first."""
    cur = await conn.execute(
        """
        SELECT organization_name, count(*), sum(success_count), sum(failure_count)
        FROM inbound_reports WHERE day >= %(from_day)s
        GROUP BY organization_name ORDER BY 4 DESC, 1 LIMIT %(limit)s
        """,
        {"from_day": from_day, "limit": limit},
    )
    return [
        (o, int(n), int(ok), int(bad))
        for o, n, ok, bad in cast(list[tuple[Any, ...]], await cur.fetchall())
    ]


async def list_policy_domain_totals(
    conn: Conn, from_day: date, limit: int, *, failing_only: bool
) -> list[tuple[str, int, int, int]]:
    """(our policy domain, reports, successful, failed sessions), the most failed first.

    A report about one policy domain (nearly all: senders write one report per domain)
    is counted from its own columns; only reports about several domains are taken apart
    (their policies JSON), which keeps this a plain scan of the days' rows."""
    cur = await conn.execute(
        """
        SELECT domain, count(*), sum(ok), sum(bad) FROM (
            SELECT policy_domains[1] AS domain, success_count AS ok, failure_count AS bad
            FROM inbound_reports
            WHERE day >= %(from_day)s AND cardinality(policy_domains) = 1
              AND (has_failures OR NOT %(failing_only)s)
            UNION ALL
            SELECT p.policy_domain, sum(p.success_count), sum(p.failure_count)
            FROM inbound_reports r, jsonb_to_recordset(r.policies) AS p(policy_domain text,
                success_count bigint, failure_count bigint)
            WHERE r.day >= %(from_day)s AND cardinality(r.policy_domains) > 1
              AND (r.has_failures OR NOT %(failing_only)s)
            GROUP BY r.id, p.policy_domain
        ) t
        GROUP BY domain
        HAVING sum(bad) > 0 OR NOT %(failing_only)s
        ORDER BY 4 DESC, 1 LIMIT %(limit)s
        """,
        {"from_day": from_day, "limit": limit, "failing_only": failing_only},
    )
    return [
        (d, int(n), int(ok), int(bad))
        for d, n, ok, bad in cast(list[tuple[Any, ...]], await cur.fetchall())
    ]
