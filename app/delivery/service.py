"""Delivery service: claim due deliveries, hand each report over, record the outcome.

`deliver_due` settles due rows that will not be attempted (sending off, mail without a
DKIM key, suppressed rua), claims due rows under a lease with `FOR UPDATE SKIP LOCKED`
(instances take disjoint rows; a dead one's come back when its lease expires), sends
them with no transaction open, `delivery.concurrency` at once, and records finished
attempts together: 'sent', 'pending' with RFC 8460 §5.5 backoff, or 'failed'. An
attempt is cut off well before its lease ends, so no one takes over a send in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from app import metrics
from app.clock import Clock
from app.config import DeliverySettings
from app.db.pool import Pool
from app.delivery import store
from app.delivery.attempt import Outcome, attempt
from app.delivery.senders import Senders

# Row types the API and CLI read; the SQL stays in `store`.
from app.delivery.store import AttemptRow as AttemptRow
from app.delivery.store import DeliveryRow as DeliveryRow

log = logging.getLogger(__name__)


async def deliver_due(
    pool: Pool,
    senders: Senders,
    clock: Clock,
    settings: DeliverySettings,
    *,
    sending: bool,
    owner: str,
    limit: int,
    day: date | None = None,
    jitter: Callable[[], float] = random.random,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Attempt up to `limit` due deliveries (of `day` only, if given); returns attempts made.

    Keeps up to `concurrency` attempts in flight. Whatever finished while the previous
    outcomes were being written is written next, in one statement: under load the batches
    grow, when idle each outcome is written at once. Once `should_stop()` is true no more
    are claimed; those in flight are finished.
    """
    async with pool.connection() as conn, conn.transaction():
        settled = await store.mark_due_deliveries_settled(
            conn, now=clock(), sending=sending, dkim=senders.dkim_key is not None
        )
    for state, count in settled.items():
        if count:
            if state == "suppressed":
                metrics.DELIVERIES_SUPPRESSED.inc(count)
            else:
                metrics.DELIVERIES_NOT_SENT.labels(state).inc(count)
            log.info("deliveries_settled", extra={"fields": {"state": state, "count": count}})
    if not sending:
        return 0

    in_flight: set[asyncio.Task[Outcome]] = set()
    attempted = 0
    exhausted = False
    try:
        while True:
            free = settings.concurrency - len(in_flight)
            wanted = min(free, settings.batch_size, limit - attempted)
            exhausted = exhausted or should_stop()
            # Claim when a quarter of the slots are free: fewer, larger claims.
            if not exhausted and wanted > 0 and free >= max(1, settings.concurrency // 4):
                async with pool.connection() as conn, conn.transaction():
                    claimed = await store.claim_due_deliveries(
                        conn,
                        owner=owner,
                        now=clock(),
                        lease_seconds=settings.lease_seconds,
                        limit=wanted,
                        day=day,
                    )
                exhausted = len(claimed) < wanted
                attempted += len(claimed)
                in_flight |= {
                    asyncio.create_task(attempt(senders, clock, settings, d, jitter))
                    for d in claimed
                }
            if not in_flight:
                return attempted
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            await _record(pool, clock, owner, [task.result() for task in done])
    finally:
        # Cancelled (the process is stopping hard): stop the attempts too; their leases
        # expire and another instance takes the deliveries over.
        for task in in_flight:
            task.cancel()


async def _record(pool: Pool, clock: Clock, owner: str, outcomes: list[Outcome]) -> None:
    async with pool.connection() as conn, conn.transaction():
        recorded = await store.mark_deliveries_attempted(
            conn,
            owner=owner,
            now=clock(),
            outcomes=[
                store.MarkRow(
                    delivery_id=o.delivery.id,
                    state=o.state,
                    next_attempt_at=o.next_attempt_at,
                    last_error=o.last_error,
                    attempt=o.attempt,
                )
                for o in outcomes
            ],
        )
    for outcome in outcomes:
        if outcome.delivery.id in recorded:
            outcome.report()
        else:
            # Another instance took the delivery over (our lease expired): its outcome wins.
            log.warning(
                "delivery_lease_lost", extra={"fields": {"delivery_id": outcome.delivery.id}}
            )


async def make_day_due(pool: Pool, clock: Clock, day: date) -> int:
    """Send a day's reports now rather than over the send window (`tlsrpt send`); returns
    the number of the day's pending deliveries."""
    async with pool.connection() as conn, conn.transaction():
        return await store.mark_day_deliveries_due(conn, day=day, now=clock())


async def list_deliveries(
    pool: Pool,
    *,
    state: str | None = None,
    day: date | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[DeliveryRow]:
    """Deliveries in id order (keyset pages: pass the last id as `after_id`)."""
    async with pool.connection() as conn:
        return await store.list_deliveries(
            conn, state=state, day=day, after_id=after_id, limit=limit
        )


async def deliveries_of(pool: Pool, report_pks: list[int]) -> dict[int, list[DeliveryRow]]:
    """The deliveries of each of these reports, in id order."""
    by_report: dict[int, list[DeliveryRow]] = {pk: [] for pk in report_pks}
    async with pool.connection() as conn:
        for row in await store.list_deliveries(conn, report_pks=report_pks):
            by_report[row.report_pk].append(row)
    return by_report


async def report_deliveries(
    pool: Pool, report_pk: int
) -> list[tuple[DeliveryRow, list[AttemptRow]]] | None:
    """A report's deliveries, each with every attempt; None when there is no such report."""
    async with pool.connection() as conn:
        deliveries = await store.list_deliveries(conn, report_pks=[report_pk])
        if not deliveries and not await store.get_report_exists(conn, report_pk):
            return None
        attempts = await store.list_attempts(conn, [d.id for d in deliveries])
    by_delivery: dict[int, list[AttemptRow]] = {d.id: [] for d in deliveries}
    for row in attempts:
        by_delivery[row.delivery_id].append(row)
    return [(d, by_delivery[d.id]) for d in deliveries]


async def retry_now(pool: Pool, clock: Clock, delivery_id: int) -> bool:
    """An operator's "send it again now": the delivery becomes due at once, with a fresh
    RFC 8460 §5.5 retry window (its earlier attempts stay in the log). False when there is
    no such delivery or it is sent or being sent."""
    async with pool.connection() as conn, conn.transaction():
        return await store.mark_delivery_due(conn, delivery_id, now=clock())


@dataclass(frozen=True)
class DeliveryCounts:
    by_state: dict[str, int]
    retrying: int


async def count_deliveries(pool: Pool) -> DeliveryCounts:
    """Deliveries per state, and how many pending ones failed before (retrying)."""
    async with pool.connection() as conn:
        return DeliveryCounts(
            await store.count_deliveries_by_state(conn),
            await store.count_retrying_deliveries(conn),
        )
