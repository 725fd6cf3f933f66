"""Reads the database figures of `/metrics` (`app.metrics.DATABASE`) once per round.

Label sets stay bounded whatever arrives: received-report sessions keep the
`MAX_PAIRS` (policy domain, organization) pairs with the most sessions and add the rest
up as `_other`; unknown result types are `other`; organizations' newest-report times
keep the `MAX_ORGANIZATIONS` most recent. Outgoing figures have no domain label at all.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, time, timedelta

from app import metrics
from app.alerts import service
from app.clock import Clock
from app.config import Settings
from app.db.pool import Pool
from app.delivery import trouble
from app.inbound import failures
from app.ingest import hours
from app.ingest import service as ingest
from app.tlsrpt.model import ResultType

MAX_PAIRS = 50
MAX_ORGANIZATIONS = 50
OTHER = "_other"
_RESULT_TYPES = frozenset(t.value for t in ResultType)


def bound_sessions(rows: list[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    """At most MAX_PAIRS (domain, organization) pairs and 13 result types (pure)."""
    per_pair: Counter[tuple[str, str]] = Counter()
    for domain, org, _, n in rows:
        per_pair[(domain, org)] += n
    kept = {pair for pair, _ in per_pair.most_common(MAX_PAIRS)}
    out: Counter[tuple[str, str, str]] = Counter()
    for domain, org, rtype, n in rows:
        pair = (domain, org) if (domain, org) in kept else (OTHER, OTHER)
        out[(*pair, rtype if rtype in _RESULT_TYPES else "other")] += n
    return [(d, o, t, n) for (d, o, t), n in sorted(out.items())]


async def refresh(pool: Pool, clock: Clock, settings: Settings) -> metrics.DatabaseFigures:
    now = clock()
    day_start = datetime.combine(now.date(), time(), UTC)
    since = now - timedelta(hours=24)
    open_days = await ingest.open_days_before(pool, now.date() + timedelta(days=1))
    last = await hours.last_result_at(pool, now)
    a = settings.alerts
    figures = metrics.DatabaseFigures(
        refreshed_at=now.timestamp(),
        inbound_sessions=bound_sessions(await failures.session_counts(pool, since)),
        inbound_reports=await failures.report_counts(pool, since),
        inbound_newest=[
            (org, ts.timestamp())
            for org, ts in await failures.newest_by_organization(pool, MAX_ORGANIZATIONS)
        ],
        failing_domains=await hours.failing_domain_count(
            pool, day_start, min_sessions=a.spike_min_sessions, min_rate=a.spike_min_rate
        ),
        deliveries=await trouble.delivery_states(pool),
        oldest_open_result_age_seconds=(
            (now - datetime.combine(min(open_days), time(), UTC)).total_seconds()
            if open_days
            else 0.0
        ),
        last_result_at=None if last is None else last.timestamp(),
        alerts_open=await service.open_counts(pool),
    )
    metrics.DATABASE.figures = figures
    return figures
