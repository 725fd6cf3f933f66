"""One delivery attempt: hand a claimed report to its rua and decide the next state.

`attempt` never raises for a delivery problem: it returns an `Outcome` (the new state,
the attempt as it is recorded, and the retry time), which the service writes together
with the outcomes of other attempts. `mailto:` builds the RFC 8460 §5.3 mail, signs it and
relays it; `https:` POSTs the gzip. A temporary failure is retried with backoff until the
RFC 8460 §5.5 window closes; a permanent one ends the delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from app import metrics
from app.clock import Clock
from app.config import DeliverySettings
from app.delivery import backoff
from app.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    Receipt,
    TemporaryDeliveryError,
)
from app.delivery.mail import ReportMail, build_report_message, format_message_id, parse_mailto
from app.delivery.senders import Senders
from app.delivery.store import AttemptRecord, ClaimedDelivery

log = logging.getLogger(__name__)

# Share of the lease an attempt may take; the rest is margin before another instance
# may take the delivery over.
ATTEMPT_SHARE_OF_LEASE = 0.5


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended: what to store for the delivery and the attempt."""

    delivery: ClaimedDelivery
    state: str  # 'sent' | 'pending' (retry) | 'failed'
    attempt: AttemptRecord
    next_attempt_at: datetime | None = None
    last_error: str | None = None

    def report(self) -> None:
        """Count and log the outcome once it is stored."""
        d = self.delivery
        fields: dict[str, object] = {
            "delivery_id": d.id,
            "report_id": d.report_id,
            "rua": d.rua,
            "attempt": d.attempts,
            "code": self.attempt.smtp_reply_code or self.attempt.http_status,
        }
        if self.state == "sent":
            metrics.DELIVERIES_SENT.labels(d.kind).inc()
            log.info("delivery_sent", extra={"fields": fields})
            return
        fields |= {"reason": self.attempt.reason, "excerpt": self.attempt.excerpt}
        if self.state == "failed":
            metrics.DELIVERIES_FAILED.labels(d.kind).inc()
            log.warning("delivery_failed", extra={"fields": fields})
        else:
            metrics.DELIVERIES_RETRIED.labels(d.kind).inc()
            log.info("delivery_retry", extra={"fields": fields | {"at": self.next_attempt_at}})


async def attempt(
    senders: Senders,
    clock: Clock,
    settings: DeliverySettings,
    delivery: ClaimedDelivery,
    jitter: Callable[[], float],
) -> Outcome:
    budget = settings.lease_seconds * ATTEMPT_SHARE_OF_LEASE
    try:
        async with asyncio.timeout(budget):
            receipt = await _send(senders, clock, delivery)
    except DeliveryError as exc:
        error: DeliveryError = exc
    except TimeoutError:
        error = TemporaryDeliveryError(f"attempt took longer than {budget:.0f} s")
    except Exception as exc:
        log.exception("delivery_error", extra={"fields": {"delivery_id": delivery.id}})
        error = TemporaryDeliveryError(f"internal error: {type(exc).__name__}")
    else:
        return Outcome(delivery, "sent", _record(delivery, "sent", receipt.code, receipt.excerpt))

    last_error = f"{error.reason}: {error.excerpt}" if error.excerpt else error.reason
    if isinstance(error, PermanentDeliveryError):
        record = _record(delivery, "permanent", error.code, error.excerpt, error.reason)
        return Outcome(delivery, "failed", record, last_error=last_error)
    record = _record(delivery, "temporary", error.code, error.excerpt, error.reason)
    retry_at = backoff.next_attempt_at(
        first_attempt_at=delivery.first_attempt_at,
        failed_at=clock(),
        attempts=delivery.attempts,
        settings=settings,
        jitter=jitter,
    )
    if retry_at is None:
        # RFC 8460 §5.5: redelivery was tried for the whole window.
        gave_up = f"gave up after {delivery.attempts} attempts; last: {last_error}"
        return Outcome(delivery, "failed", record, last_error=gave_up)
    return Outcome(delivery, "pending", record, next_attempt_at=retry_at, last_error=last_error)


def _record(
    delivery: ClaimedDelivery,
    outcome: str,
    code: int | None,
    excerpt: str,
    reason: str | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        outcome=outcome,
        started_at=delivery.started_at,
        smtp_reply_code=code if delivery.kind == "mailto" else None,
        http_status=code if delivery.kind == "https" else None,
        reason=reason,
        excerpt=excerpt or None,
    )


async def _send(senders: Senders, clock: Clock, delivery: ClaimedDelivery) -> Receipt:
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
            now=clock(),
            message_id=format_message_id(
                delivery.report_id, delivery.id, senders.submitter, key.tags
            ),
        )
        envelope_sender = senders.envelope_sender(delivery.id)
    except ValueError as exc:
        raise PermanentDeliveryError(f"can not build the mail: {exc}") from None
    signed = await senders.signer.sign(message, key)
    # The header From stays; only the envelope names the delivery (bounces come to it).
    return await senders.relay.send(envelope_sender or senders.from_address, to_address, signed)
