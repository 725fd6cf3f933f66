"""Delivery service: claim due deliveries, hand each report over, record the outcome.

`deliver_due` first settles due rows that will not be attempted (sending switched off,
mail without a DKIM key, suppressed rua), then claims due rows under a lease with
`FOR UPDATE SKIP LOCKED` (several instances take disjoint rows; a dead instance's rows
come back when its lease expires), and sends them with no transaction open, at most
`delivery.concurrency` at once, claiming more as slots free up. Each attempt ends in one
statement that records it and sets the next state: 'sent', 'pending' again with a backoff
(RFC 8460 §5.5), or 'failed'. An attempt is cut off well before its lease ends, so no
other instance can take over a delivery that is still being sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import date, datetime

from app import metrics
from app.delivery import backoff, store
from app.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    Receipt,
    TemporaryDeliveryError,
)
from app.delivery.mail import ReportMail, build_report_message, format_message_id, parse_mailto
from app.delivery.senders import Senders, open_senders
from app.delivery.store import AttemptRecord, ClaimedDelivery
from app.dns.resolver import DnsResolver
from app.resources import Resources, utc_now

log = logging.getLogger(__name__)

# Share of the lease an attempt may take; the rest is margin before another instance
# may take the delivery over.
ATTEMPT_SHARE_OF_LEASE = 0.5


def comparison_time(resources: Resources) -> datetime | None:
    """The time for due/lease comparisons: None (the database's clock) unless injected."""
    return None if resources.clock is utc_now else resources.clock()


def senders_of(resources: Resources) -> Senders:
    """The process's senders, opened on first use."""
    if resources.senders is None:
        # rua hosts are resolved by the service's own resolver (SPEC §5).
        resolver = resources.resolver
        if not isinstance(resolver, DnsResolver):
            resolver = DnsResolver(resources.settings.dns)
        resources.senders = open_senders(resources.settings, resolver)
    return resources.senders


async def deliver_due(
    resources: Resources,
    *,
    owner: str,
    limit: int,
    day: date | None = None,
    jitter: Callable[[], float] = random.random,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Attempt up to `limit` due deliveries (of `day` only, if given); returns attempts made.

    Once `should_stop()` is true no more are claimed; those in flight are finished.
    """
    settings = resources.settings
    senders = senders_of(resources)
    now = comparison_time(resources)
    async with resources.pool.connection() as conn, conn.transaction():
        settled = await store.mark_due_deliveries_settled(
            conn, now=now, sending=settings.send_reports, dkim=senders.dkim_key is not None
        )
    for state, count in settled.items():
        if count:
            if state == "suppressed":
                metrics.DELIVERIES_SUPPRESSED.inc(count)
            else:
                metrics.DELIVERIES_NOT_SENT.labels(state).inc(count)
            log.info("deliveries_settled", extra={"fields": {"state": state, "count": count}})
    if not settings.send_reports:
        return 0

    in_flight: set[asyncio.Task[None]] = set()
    try:
        return await _deliver_in_rounds(
            resources, senders, owner, limit, day, jitter, should_stop, in_flight
        )
    finally:
        # Cancelled (the process is stopping hard): stop the attempts too; their leases
        # expire and another instance takes the deliveries over.
        for task in in_flight:
            task.cancel()


async def _deliver_in_rounds(
    resources: Resources,
    senders: Senders,
    owner: str,
    limit: int,
    day: date | None,
    jitter: Callable[[], float],
    should_stop: Callable[[], bool],
    in_flight: set[asyncio.Task[None]],
) -> int:
    settings = resources.settings
    concurrency = settings.delivery.concurrency
    attempted = 0
    exhausted = False
    while True:
        free = concurrency - len(in_flight)
        wanted = min(free, settings.delivery.batch_size, limit - attempted)
        # Claim when a quarter of the slots are free: fewer, larger claims.
        if should_stop():
            exhausted = True
        if not exhausted and wanted > 0 and free >= max(1, concurrency // 4):
            async with resources.pool.connection() as conn, conn.transaction():
                claimed = await store.claim_due_deliveries(
                    conn,
                    owner=owner,
                    now=comparison_time(resources),
                    lease_seconds=settings.delivery.lease_seconds,
                    limit=wanted,
                    day=day,
                )
            exhausted = len(claimed) < wanted
            attempted += len(claimed)
            for delivery in claimed:
                in_flight.add(
                    asyncio.create_task(_attempt(resources, senders, delivery, owner, jitter))
                )
        if not in_flight:
            return attempted
        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        in_flight -= done
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                # Recording the outcome failed (database gone): the lease will expire.
                log.error("delivery_not_recorded", exc_info=exc)


async def _attempt(
    resources: Resources,
    senders: Senders,
    delivery: ClaimedDelivery,
    owner: str,
    jitter: Callable[[], float],
) -> None:
    budget = resources.settings.delivery.lease_seconds * ATTEMPT_SHARE_OF_LEASE
    try:
        async with asyncio.timeout(budget):
            receipt = await _send(resources, senders, delivery)
    except DeliveryError as exc:
        error: DeliveryError = exc
    except TimeoutError:
        error = TemporaryDeliveryError(f"attempt took longer than {budget:.0f} s")
    except Exception as exc:
        log.exception("delivery_error", extra={"fields": {"delivery_id": delivery.id}})
        error = TemporaryDeliveryError(f"internal error: {type(exc).__name__}")
    else:
        await _record(resources, delivery, owner, "sent", receipt=receipt)
        metrics.DELIVERIES_SENT.labels(delivery.kind).inc()
        log.info("delivery_sent", extra={"fields": _fields(delivery, receipt.code)})
        return

    if isinstance(error, PermanentDeliveryError):
        await _record(resources, delivery, owner, "failed", error=error)
        metrics.DELIVERIES_FAILED.labels(delivery.kind).inc()
        log.warning("delivery_failed", extra={"fields": _failure(delivery, error)})
        return
    retry_at = backoff.next_attempt_at(
        first_attempt_at=delivery.first_attempt_at,
        failed_at=resources.clock(),
        attempts=delivery.attempts,
        settings=resources.settings.delivery,
        jitter=jitter,
    )
    if retry_at is None:
        # RFC 8460 §5.5: redelivery was tried for the whole window.
        await _record(resources, delivery, owner, "failed", error=error, gave_up=True)
        metrics.DELIVERIES_FAILED.labels(delivery.kind).inc()
        log.warning("delivery_failed", extra={"fields": _failure(delivery, error)})
        return
    await _record(resources, delivery, owner, "pending", error=error, retry_at=retry_at)
    metrics.DELIVERIES_RETRIED.labels(delivery.kind).inc()
    log.info("delivery_retry", extra={"fields": _failure(delivery, error) | {"at": retry_at}})


async def _send(resources: Resources, senders: Senders, delivery: ClaimedDelivery) -> Receipt:
    if delivery.kind == "https":
        return await senders.poster.post(delivery.rua, delivery.report_gzip)
    if delivery.kind != "mailto":
        raise PermanentDeliveryError(f"unknown delivery kind {delivery.kind!r}")
    key = senders.dkim_key
    if key is None:
        # Settled before claiming; reached only if the key vanished in between.
        raise TemporaryDeliveryError("no DKIM key configured")
    if senders.from_address is None:
        raise TemporaryDeliveryError("no From address: set TLSRPT_MAIL__FROM")
    try:
        to_address = parse_mailto(delivery.rua)
        message = build_report_message(
            ReportMail(
                report_id=delivery.report_id,
                policy_domain=delivery.policy_domain,
                submitter=senders.submitter,
                day=delivery.day,
                filename=delivery.filename,
                report_gzip=delivery.report_gzip,
                from_address=senders.from_address,
                to_address=to_address,
            ),
            now=resources.clock(),
            message_id=format_message_id(delivery.report_id, delivery.id, senders.submitter),
        )
    except ValueError as exc:
        raise PermanentDeliveryError(f"can not build the mail: {exc}") from None
    signed = await senders.signer.sign(message, key)
    return await senders.relay.send(senders.from_address, to_address, signed)


async def _record(
    resources: Resources,
    delivery: ClaimedDelivery,
    owner: str,
    state: str,
    *,
    receipt: Receipt | None = None,
    error: DeliveryError | None = None,
    retry_at: datetime | None = None,
    gave_up: bool = False,
) -> None:
    code = receipt.code if receipt else error.code if error else None
    last_error = None
    if error is not None:
        last_error = f"{error.reason}: {error.excerpt}" if error.excerpt else error.reason
        if gave_up:
            last_error = f"gave up after {delivery.attempts} attempts; last: {last_error}"
    attempt = AttemptRecord(
        outcome="sent"
        if receipt
        else "permanent"
        if state == "failed" and not gave_up
        else "temporary",
        started_at=delivery.started_at,
        smtp_reply_code=code if delivery.kind == "mailto" else None,
        http_status=code if delivery.kind == "https" else None,
        reason=error.reason if error else None,
        excerpt=receipt.excerpt if receipt else error.excerpt if error else None,
    )
    async with resources.pool.connection() as conn:
        recorded = await store.mark_delivery_attempted(
            conn,
            delivery_id=delivery.id,
            owner=owner,
            now=comparison_time(resources),
            state=state,
            attempt=attempt,
            next_attempt_at=retry_at,
            last_error=last_error,
        )
    if not recorded:
        log.warning("delivery_lease_lost", extra={"fields": {"delivery_id": delivery.id}})


def _fields(delivery: ClaimedDelivery, code: int | None) -> dict[str, object]:
    return {
        "delivery_id": delivery.id,
        "report_id": delivery.report_id,
        "rua": delivery.rua,
        "attempt": delivery.attempts,
        "code": code,
    }


def _failure(delivery: ClaimedDelivery, error: DeliveryError) -> dict[str, object]:
    return _fields(delivery, error.code) | {"reason": error.reason, "excerpt": error.excerpt}


async def make_day_due(resources: Resources, day: date) -> int:
    """Send a day's reports now rather than over the send window (`tlsrpt send`); returns
    the number of the day's pending deliveries."""
    async with resources.pool.connection() as conn, conn.transaction():
        return await store.mark_day_deliveries_due(conn, day=day, now=comparison_time(resources))


async def list_deliveries(
    resources: Resources,
    *,
    state: str | None = None,
    day: date | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[store.DeliveryRow]:
    """Deliveries in id order (keyset pages: pass the last id as `after_id`)."""
    async with resources.pool.connection() as conn:
        return await store.list_deliveries(
            conn, state=state, day=day, after_id=after_id, limit=limit
        )


async def report_deliveries(
    resources: Resources, report_pk: int
) -> list[tuple[store.DeliveryRow, list[store.AttemptRow]]] | None:
    """A report's deliveries, each with every attempt; None when there is no such report."""
    async with resources.pool.connection() as conn:
        deliveries = await store.list_report_deliveries(conn, report_pk)
        if not deliveries and not await store.get_report_exists(conn, report_pk):
            return None
        attempts = await store.list_attempts(conn, [d.id for d in deliveries])
    by_delivery: dict[int, list[store.AttemptRow]] = {d.id: [] for d in deliveries}
    for attempt in attempts:
        by_delivery[attempt.delivery_id].append(attempt)
    return [(d, by_delivery[d.id]) for d in deliveries]
