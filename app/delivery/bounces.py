"""Bounces of report mail: record what a DSN says and suppress a rua that keeps bouncing.

A DSN about a known delivery becomes an attempt in its log (`bounced` for a permanent
failure, `delayed` for a temporary one), visible in `GET /v1/reports/{id}/deliveries`; a
permanent one also ends a 'sent' delivery as 'failed'. A rua that bounced permanently on
`suppress_after` different UTC days, with no report delivered in between (sent, and not
bounced within `settle_hours`), is suppressed for `suppress_days` with the reason, on the
list the operator sees (`tlsrpt suppress list`). A DSN naming no delivery we know is
logged and dropped: answering it with an error would only make the MTA send it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from app import metrics
from app.clock import Clock
from app.config import BounceSettings
from app.db.pool import Pool
from app.delivery import bounce_store as store
from app.delivery.dsn import Dsn, RecipientStatus
from app.delivery.errors import format_excerpt
from app.delivery.mail import BounceTags, parse_mailto
from app.delivery.suppression import MAX_COMMENT

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BounceOutcome:
    """What a DSN changed."""

    # The delivery it is about; None when it names none we know (dropped).
    delivery_id: int | None
    # The attempt recorded: None when the DSN was dropped or reports no failure.
    outcome: Literal["bounced", "delayed"] | None = None
    status: RecipientStatus | None = None
    # Permanent bounces only: the rua's bounce days, and whether it is now suppressed.
    bounce_days: int = 0
    suppressed: bool = False


async def record_bounce(
    pool: Pool, clock: Clock, settings: BounceSettings, dsn: Dsn, tags: BounceTags | None
) -> BounceOutcome:
    """Record a DSN on the delivery it names (see the module docstring)."""
    delivery_id, digest = dsn.delivery_id, None
    if delivery_id is None and dsn.returned_message_id is not None:
        delivery_id, digest = dsn.returned_message_id
    if delivery_id is None:
        return _dropped(dsn, None, "the DSN names no delivery")
    now = clock()
    async with pool.connection() as conn, conn.transaction():
        delivery = await store.get_delivery_for_update(conn, delivery_id)
        # A Message-ID is only ours if its digest is the report's.
        if delivery is None or (
            digest is not None
            and (tags is None or not tags.matches("message-id:" + delivery.report_id, digest))
        ):
            return _dropped(dsn, delivery_id, "no such delivery")
        block = dsn.status_for(_address(delivery.rua))
        if block is None or not (block.permanent or block.temporary):
            metrics.BOUNCES.labels("not_a_failure").inc()
            log.info(
                "bounce_not_a_failure",
                extra={"fields": {"delivery_id": delivery_id, "action": block and block.action}},
            )
            return BounceOutcome(delivery_id, status=block)
        outcome: Literal["bounced", "delayed"] = "bounced" if block.permanent else "delayed"
        await store.lock_rua(conn, delivery.rua)
        await store.insert_bounce_attempt(
            conn,
            delivery_id=delivery_id,
            outcome=outcome,
            smtp_reply_code=block.smtp_code,
            reason=format_excerpt(
                f"DSN from {dsn.reporting_mta or 'unknown'}: {block.action} {block.status}"
            ),
            excerpt=format_excerpt(block.diagnostic) if block.diagnostic else None,
            now=now,
        )
        days, suppressed = 0, False
        if block.permanent:
            await store.mark_delivery_bounced(
                conn,
                delivery_id=delivery_id,
                last_error=format_excerpt(f"bounced: {block.status} {block.describe()}"),
            )
            days = await store.get_bounce_days(
                conn, rua=delivery.rua, now=now, settle_seconds=settings.settle_hours * 3600
            )
            if days >= settings.suppress_after:
                suppressed = await store.upsert_bounce_suppression(
                    conn,
                    target=delivery.rua,
                    comment=format_excerpt(
                        f"{days} permanent bounces: {block.describe()}", MAX_COMMENT
                    ),
                    expires_at=now + timedelta(days=settings.suppress_days),
                    now=now,
                )
    fields = {
        "delivery_id": delivery_id,
        "rua": delivery.rua,
        "outcome": outcome,
        "status": block.status,
        "diagnostic": block.diagnostic,
        "bounce_days": days,
    }
    metrics.BOUNCES.labels(outcome).inc()
    log.info("delivery_bounced", extra={"fields": fields})
    if suppressed:
        log.warning("rua_suppressed_after_bounces", extra={"fields": fields})
    return BounceOutcome(delivery_id, outcome, block, days, suppressed)


def _dropped(dsn: Dsn, delivery_id: int | None, reason: str) -> BounceOutcome:
    metrics.BOUNCES.labels("unmatched").inc()
    log.warning(
        "bounce_unmatched",
        extra={
            "fields": {
                "delivery_id": delivery_id,
                "reason": reason,
                "reporting_mta": dsn.reporting_mta,
            }
        },
    )
    return BounceOutcome(None)


def _address(rua: str) -> str | None:
    try:
        return parse_mailto(rua)
    except ValueError:
        return None
