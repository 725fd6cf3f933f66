"""SQL for days and the aggregate counters (policy_counts, failure_counts, recipient_counts).

Upserts add many rows per statement from JSON record sets, with rows sorted by key so
concurrent batches lock rows in one global order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import orjson
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.types.json import Jsonb

from app.tlsrpt.model import (
    FailureDetail,
    Policy,
    PolicyAggregate,
    PolicyType,
    ResultType,
)
from app.tlsrpt.tally import Tally

Conn = AsyncConnection[tuple[Any, ...]]

# Namespace of the per-day advisory locks (classid of the two-key form).
DAY_LOCK_NAMESPACE = 84_600_001


async def lock_days_shared(conn: Conn, days: list[date]) -> None:
    """Block closing of these days until the transaction ends.

    There may be no `days` row yet for a day being ingested, hence an advisory lock
    rather than a row lock. Taken in date order.
    """
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock_shared(%(ns)s, d - DATE '1970-01-01')
        FROM unnest(%(days)s::date[]) AS d ORDER BY d
        """,
        {"ns": DAY_LOCK_NAMESPACE, "days": sorted(days)},
    )


async def lock_day_exclusive(conn: Conn, day: date) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%(ns)s, %(day)s::date - DATE '1970-01-01')",
        {"ns": DAY_LOCK_NAMESPACE, "day": day},
    )


_CLOSED_DAYS = """
    SELECT day FROM days WHERE day = ANY(%(days)s::date[]) AND closed_at IS NOT NULL ORDER BY day
"""


async def list_closed_days(conn: Conn, days: list[date]) -> list[date]:
    cur = await conn.execute(_CLOSED_DAYS, {"days": days})
    return [row[0] for row in await cur.fetchall()]


async def start_list_closed_days(conn: Conn, days: list[date]) -> AsyncCursor[tuple[Any, ...]]:
    """`list_closed_days` in pipeline mode: the cursor's rows are the closed days; fetching
    them sends the pipeline."""
    return await conn.execute(_CLOSED_DAYS, {"days": days})


async def upsert_day_closed(conn: Conn, day: date, now: datetime) -> bool:
    """Mark the day closed; True if this call closed it."""
    cur = await conn.execute(
        """
        INSERT INTO days (day, closed_at) VALUES (%(day)s, %(now)s)
        ON CONFLICT (day) DO UPDATE SET closed_at = %(now)s WHERE days.closed_at IS NULL
        RETURNING day
        """,
        {"day": day, "now": now},
    )
    return await cur.fetchone() is not None


async def mark_day_totals(conn: Conn, day: date) -> None:
    """Store a closed day's totals on its `days` row (its counters no longer change)."""
    await conn.execute(
        """
        UPDATE days SET domain_count = t.domains, success_count = t.ok, failure_count = t.bad
        FROM (
            SELECT count(DISTINCT policy_domain) AS domains,
                coalesce(sum(success_count), 0) AS ok, coalesce(sum(failure_count), 0) AS bad
            FROM policy_counts WHERE day = %(day)s
        ) t
        WHERE days.day = %(day)s
        """,
        {"day": day},
    )


async def insert_batch(conn: Conn, batch_id: str, day: date, now: datetime) -> bool:
    """Record a batch id; False when it was recorded before (the batch is a repeat).

    A concurrent transaction inserting the same id makes this wait for its outcome.
    """
    cur = await conn.execute(
        """
        INSERT INTO ingest_batches (batch_id, day, recorded_at)
        VALUES (%(batch_id)s, %(day)s, %(now)s)
        ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id
        """,
        {"batch_id": batch_id, "day": day, "now": now},
    )
    return await cur.fetchone() is not None


async def get_batch_exists(conn: Conn, batch_id: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM ingest_batches WHERE batch_id = %(batch_id)s", {"batch_id": batch_id}
    )
    return await cur.fetchone() is not None


async def upsert_counts(conn: Conn, tally: Tally) -> None:
    """Add a tally's counters to the database (three multi-row upserts)."""
    entries = sorted(tally, key=lambda e: (e.day, e.policy.key))
    policy_rows = []
    detail_rows = []
    recipient_rows = []
    for e in entries:
        pkey = e.policy.key.hex()
        day = e.day.isoformat()
        policy_rows.append(
            {
                "day": day,
                "policy_key": pkey,
                "policy_type": e.policy.policy_type.value,
                "policy_domain": e.policy.policy_domain,
                "policy_string": e.policy.policy_string,
                "mx_host": e.policy.mx_host,
                "success_count": e.success_count,
                "failure_count": e.failure_count,
                "trigger_count": e.trigger_count,
            }
        )
        for d, n in sorted(e.details.items(), key=lambda item: item[0].key):
            detail_rows.append(
                {
                    "day": day,
                    "policy_key": pkey,
                    "detail_key": d.key.hex(),
                    "result_type": d.result_type.value,
                    "sending_mta_ip": d.sending_mta_ip,
                    "receiving_mx_hostname": d.receiving_mx_hostname,
                    "receiving_mx_helo": d.receiving_mx_helo,
                    "receiving_ip": d.receiving_ip,
                    "additional_information": d.additional_information,
                    "failure_reason_code": d.failure_reason_code,
                    "n": n,
                }
            )
        for domain, (ok, failed) in sorted(e.recipients.items()):
            recipient_rows.append(
                {
                    "day": day,
                    "policy_key": pkey,
                    "recipient_domain": domain,
                    "success_count": ok,
                    "failure_count": failed,
                }
            )
    await conn.execute(
        """
        INSERT INTO policy_counts AS c (day, policy_key, policy_type, policy_domain,
            policy_string, mx_host, success_count, failure_count, trigger_count)
        SELECT r.day, decode(r.policy_key, 'hex'), r.policy_type, r.policy_domain,
            r.policy_string, r.mx_host, r.success_count, r.failure_count, r.trigger_count
        FROM jsonb_to_recordset(%(rows)s) AS r(day date, policy_key text, policy_type text,
            policy_domain text, policy_string text[], mx_host text[], success_count bigint,
            failure_count bigint, trigger_count bigint)
        ON CONFLICT (day, policy_key) DO UPDATE SET
            success_count = c.success_count + EXCLUDED.success_count,
            failure_count = c.failure_count + EXCLUDED.failure_count,
            trigger_count = c.trigger_count + EXCLUDED.trigger_count
        """,
        {"rows": jsonb_rows(policy_rows)},
    )
    if detail_rows:
        await conn.execute(
            """
            INSERT INTO failure_counts AS c (day, policy_key, detail_key, result_type,
                sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip,
                additional_information, failure_reason_code, failed_session_count)
            SELECT r.day, decode(r.policy_key, 'hex'), decode(r.detail_key, 'hex'),
                r.result_type, r.sending_mta_ip, r.receiving_mx_hostname,
                r.receiving_mx_helo, r.receiving_ip, r.additional_information,
                r.failure_reason_code, r.n
            FROM jsonb_to_recordset(%(rows)s) AS r(day date, policy_key text,
                detail_key text, result_type text, sending_mta_ip inet,
                receiving_mx_hostname text, receiving_mx_helo text, receiving_ip inet,
                additional_information text, failure_reason_code text, n bigint)
            ON CONFLICT (day, policy_key, detail_key) DO UPDATE SET
                failed_session_count = c.failed_session_count + EXCLUDED.failed_session_count
            """,
            {"rows": jsonb_rows(detail_rows)},
        )
    if recipient_rows:
        await conn.execute(
            """
            INSERT INTO recipient_counts AS c (day, policy_key, recipient_domain,
                success_count, failure_count)
            SELECT r.day, decode(r.policy_key, 'hex'), r.recipient_domain,
                r.success_count, r.failure_count
            FROM jsonb_to_recordset(%(rows)s) AS r(day date, policy_key text,
                recipient_domain text, success_count bigint, failure_count bigint)
            ON CONFLICT (day, policy_key, recipient_domain) DO UPDATE SET
                success_count = c.success_count + EXCLUDED.success_count,
                failure_count = c.failure_count + EXCLUDED.failure_count
            """,
            {"rows": jsonb_rows(recipient_rows)},
        )


def jsonb_rows(rows: Sequence[Mapping[str, Any]]) -> Jsonb:
    """Rows as one JSON document for `jsonb_to_recordset`, encoded by orjson."""
    return Jsonb(rows, dumps=lambda obj: orjson.dumps(obj).decode())


async def list_day_aggregates(
    conn: Conn, day: date, policy_domains: Sequence[str] | None = None
) -> list[PolicyAggregate]:
    """The day's counters (of these policy domains), by policy domain then policy key."""
    params = {"day": day, "domains": None if policy_domains is None else list(policy_domains)}
    cur = await conn.execute(
        """
        SELECT policy_key, policy_type, policy_domain, policy_string, mx_host,
            success_count, failure_count, trigger_count
        FROM policy_counts
        WHERE day = %(day)s
            AND (%(domains)s::text[] IS NULL OR policy_domain = ANY(%(domains)s::text[]))
        ORDER BY policy_domain, policy_key
        """,
        params,
    )
    aggregates: dict[bytes, PolicyAggregate] = {}
    for key, ptype, domain, pstring, mx, ok, failed, trigger in await cur.fetchall():
        policy = Policy(PolicyType(ptype), domain, tuple(pstring), tuple(mx))
        aggregates[key] = PolicyAggregate(policy, ok, failed, trigger, [])
    cur = await conn.execute(
        """
        SELECT f.policy_key, f.result_type, host(f.sending_mta_ip), f.receiving_mx_hostname,
            f.receiving_mx_helo, host(f.receiving_ip), f.additional_information,
            f.failure_reason_code, f.failed_session_count
        FROM failure_counts f
        WHERE f.day = %(day)s AND (%(domains)s::text[] IS NULL OR f.policy_key IN (
            SELECT policy_key FROM policy_counts
            WHERE day = %(day)s AND policy_domain = ANY(%(domains)s::text[])))
        ORDER BY f.policy_key, f.detail_key
        """,
        params,
    )
    for key, rtype, smta, mxname, helo, rip, info, code, n in await cur.fetchall():
        detail = FailureDetail(ResultType(rtype), smta, mxname, helo, rip, info, code)
        aggregates[key].failure_details.append((detail, n))
    return list(aggregates.values())


async def list_day_domains(conn: Conn, day: date) -> list[str]:
    cur = await conn.execute(
        "SELECT DISTINCT policy_domain FROM policy_counts WHERE day = %(day)s ORDER BY 1",
        {"day": day},
    )
    return [row[0] for row in await cur.fetchall()]


async def list_open_days_before(conn: Conn, day: date) -> list[date]:
    """Days with results that are not closed yet and end before `day`."""
    cur = await conn.execute(
        """
        SELECT DISTINCT c.day FROM policy_counts c
        LEFT JOIN days d ON d.day = c.day
        WHERE c.day < %(day)s AND d.closed_at IS NULL ORDER BY 1
        """,
        {"day": day},
    )
    return [row[0] for row in await cur.fetchall()]


async def ensure_partitions(conn: Conn, days: Sequence[date]) -> int:
    """Create the counter tables' partitions of these days that are missing (in the
    caller's transaction, which should be short: see IngestCommitter); returns how many."""
    cur = await conn.execute(
        "SELECT ensure_count_partitions(%(days)s::date[])", {"days": sorted(days)}
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# The counter tables, in the order ingest writes them (and retention locks them).
COUNT_TABLES = ("policy_counts", "failure_counts", "recipient_counts")


async def drop_counts_before(conn: Conn, day: date) -> int:
    """Retention: drop the partitions of days before `day` (each table's, in the order
    ingest writes them, so the two lock the parents in one order); returns the policy
    rows they held."""
    cur = await conn.execute(
        """
        SELECT parent.relname, child.relname
        FROM pg_inherits i
        JOIN pg_class child ON child.oid = i.inhrelid
        JOIN pg_class parent ON parent.oid = i.inhparent
        WHERE parent.relname = ANY(%(tables)s::text[])
            AND parent.relnamespace = to_regnamespace(current_schema())
            AND to_date(right(child.relname, 8), 'YYYYMMDD') < %(day)s
        ORDER BY array_position(%(tables)s::text[], parent.relname::text), child.relname
        """,
        {"tables": list(COUNT_TABLES), "day": day},
    )
    policy_rows = 0
    for parent, partition in await cur.fetchall():
        name = sql.Identifier(partition)
        if parent == "policy_counts":
            counted = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name))
            policy_rows += int((await counted.fetchone() or (0,))[0])
        await conn.execute(sql.SQL("DROP TABLE {}").format(name))
    params = {"day": day}
    await conn.execute("DELETE FROM days WHERE day < %(day)s", params)
    await conn.execute("DELETE FROM ingest_batches WHERE day < %(day)s", params)
    return policy_rows


# Reading, for the web pages


async def list_day_totals(
    conn: Conn, from_day: date, to_day: date
) -> list[tuple[date, int, int, int]]:
    """(day, policy domains, successful sessions, failed sessions) per day with results,
    newest first: closed days from their stored totals, open ones counted now."""
    cur = await conn.execute(
        """
        SELECT day, domain_count, success_count, failure_count FROM days
        WHERE day BETWEEN %(from_day)s AND %(to_day)s AND domain_count > 0
        UNION ALL
        SELECT c.day, count(DISTINCT c.policy_domain), sum(c.success_count),
            sum(c.failure_count)
        FROM policy_counts c
        WHERE c.day BETWEEN %(from_day)s AND %(to_day)s AND NOT EXISTS (
            SELECT 1 FROM days d WHERE d.day = c.day AND d.domain_count IS NOT NULL)
        GROUP BY c.day
        ORDER BY 1 DESC
        """,
        {"from_day": from_day, "to_day": to_day},
    )
    return [(d, int(n), int(ok), int(bad)) for d, n, ok, bad in await cur.fetchall()]


async def list_domain_totals(
    conn: Conn,
    day: date,
    *,
    contains: str | None,
    failing_only: bool,
    by_failures: bool,
    after: str | None,
    offset: int,
    limit: int,
) -> list[tuple[str, int, int, int]]:
    """(policy domain, policies, successful, failed sessions) of a day: by name (keyset
    pages: names after `after`, read in index order), or the most failed first (offset
    pages); `contains` filters by a part of the name."""
    cur = await conn.execute(
        """
        SELECT policy_domain, count(*), sum(success_count), sum(failure_count)
        FROM policy_counts
        WHERE day = %(day)s
          AND (%(contains)s::text IS NULL OR strpos(policy_domain, %(contains)s) > 0)
          AND (%(after)s::text IS NULL OR policy_domain > %(after)s)
        GROUP BY policy_domain
        HAVING NOT %(failing_only)s OR sum(failure_count) > 0
        ORDER BY CASE WHEN %(by_failures)s THEN -sum(failure_count) ELSE 0 END, policy_domain
        OFFSET %(offset)s LIMIT %(limit)s
        """,
        {
            "day": day,
            "contains": contains,
            "failing_only": failing_only,
            "by_failures": by_failures,
            "after": after,
            "offset": offset,
            "limit": limit,
        },
    )
    return [(d, int(n), int(ok), int(bad)) for d, n, ok, bad in await cur.fetchall()]


async def list_top_failing_domains(conn: Conn, day: date, limit: int) -> list[tuple[str, int]]:
    """(policy domain, failed sessions) of a day, the most failed first; reads only the
    rows that have failures."""
    cur = await conn.execute(
        """
        SELECT policy_domain, sum(failure_count) FROM policy_counts
        WHERE day = %(day)s AND failure_count > 0
        GROUP BY policy_domain ORDER BY 2 DESC, 1 LIMIT %(limit)s
        """,
        {"day": day, "limit": limit},
    )
    return [(d, int(n)) for d, n in await cur.fetchall()]
