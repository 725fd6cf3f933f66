"""What received reports say about our domains now, for the alerts and `/metrics`.

Reads only, over reports received (or received again) since a time: failed sessions per
policy domain with their result types, receiving MX hosts and reporters (the incoming
failures alert), and counts by domain, organization, result type, channel and DKIM
verdict (the metrics; the caller bounds their label sets).
"""

from __future__ import annotations

from datetime import datetime

from app.db.pool import Pool
from app.inbound import failures_store
from app.inbound.failures_store import DomainFailures

__all__ = ["DomainFailures"]


async def domain_failures(pool: Pool, since: datetime, min_failures: int) -> list[DomainFailures]:
    async with pool.connection() as conn:
        return await failures_store.list_domain_failures(
            conn, since=since, min_failures=min_failures
        )


async def session_counts(pool: Pool, since: datetime) -> list[tuple[str, str, str, int]]:
    async with pool.connection() as conn:
        return await failures_store.list_sessions_by_label(conn, since)


async def report_counts(pool: Pool, since: datetime) -> list[tuple[str, str, int]]:
    async with pool.connection() as conn:
        return await failures_store.list_report_counts(conn, since)


async def newest_by_organization(pool: Pool, limit: int) -> list[tuple[str, datetime]]:
    async with pool.connection() as conn:
        return await failures_store.list_newest_by_organization(conn, limit)
