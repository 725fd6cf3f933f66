"""Alerts: evaluation rounds, digests, notifications, and the list operators read.

A round (`run_round`, run by every instance's scheduler, or `tlsrpt alerts evaluate`)
evaluates each condition of `conditions.CONDITIONS` (and dkim_mismatch through the
caller's `DkimWatch`, which keeps when DNS was last asked), raises the ones not open yet (once:
a unique index on the open alerts settles races between instances) and resolves the open
ones that cleared; then every alert not yet notified goes into one digest, at most one
per `digest_min_interval_seconds`, queued as one notification per webhook URL and mail
address; then due notifications are sent with no transaction open, and retried with
backoff (`app/backoff.py`) for `retry_max_hours`. Clock and jitter are injected.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app import metrics
from app.alerts import conditions, notify, store
from app.alerts.conditions import Condition, DkimWatch, Evaluator
from app.alerts.store import AlertRow, ClaimedNotification, NotificationRow
from app.backoff import backoff_seconds
from app.clock import Clock
from app.config import AlertSettings, Settings
from app.db.pool import Pool
from app.delivery.errors import DeliveryError, PermanentDeliveryError
from app.delivery.senders import Senders

log = logging.getLogger(__name__)

__all__ = [
    "AlertRow",
    "DkimWatch",
    "NotificationRow",
    "Round",
    "evaluate",
    "list_alerts",
    "run_round",
]

# A notification being sent is another instance's for this long.
LEASE_SECONDS = 300.0
# The longest wait between two attempts of a notification.
RETRY_CAP_SECONDS = 3600.0
# Resolved alerts and finished notifications are kept this long.
KEPT = timedelta(days=30)


@dataclass
class Round:
    """What one round did."""

    raised: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    failed_conditions: list[str] = field(default_factory=list)
    notifications_queued: int = 0
    notifications_sent: int = 0


def _window(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def _kind_lock(kind: str) -> int:
    return zlib.crc32(kind.encode()) & 0x7FFFFFFF or 1


async def apply_conditions(
    pool: Pool, now: datetime, kind: str, found: list[Condition]
) -> tuple[int, int]:
    """Raise what is not open yet and resolve what cleared; (raised, resolved)."""
    async with pool.connection() as conn, conn.transaction():
        await store.lock_xact(conn, _kind_lock(kind))
        # Only new conditions and open alerts due for a refresh are written.
        open_now = await store.list_open_subjects(conn, kind)
        stale = now - timedelta(seconds=store.REFRESH_SECONDS)
        raised = await store.upsert_open_alerts(
            conn,
            kind=kind,
            window_start=_window(now),
            now=now,
            rows=[
                (c.subject, c.summary, c.details)
                for c in found
                if c.subject not in open_now or open_now[c.subject] <= stale
            ],
        )
        resolved = await store.mark_alerts_resolved(
            conn, kind=kind, keep=[c.subject for c in found], now=now
        )
    if raised:
        metrics.ALERTS_RAISED.labels(kind).inc(len(raised))
        log.warning("alerts_raised", extra={"fields": {"kind": kind, "count": len(raised)}})
    if resolved:
        log.info("alerts_resolved", extra={"fields": {"kind": kind, "count": resolved}})
    return len(raised), resolved


async def evaluate(
    pool: Pool,
    clock: Clock,
    settings: AlertSettings,
    evaluators: Mapping[str, Evaluator] = conditions.CONDITIONS,
) -> Round:
    """Evaluate every condition once; a condition that fails is logged and left as it
    was (its open alerts are not resolved), and so is one that gives no verdict."""
    result = Round()
    for kind, evaluator in evaluators.items():
        now = clock()
        try:
            found = await evaluator(pool, now, settings)
            if found is None:
                continue
            raised, resolved = await apply_conditions(pool, now, kind, found)
        except Exception:
            log.exception("alert_condition_failed", extra={"fields": {"kind": kind}})
            result.failed_conditions.append(kind)
            continue
        result.raised[kind] = raised
        result.resolved[kind] = resolved
    return result


def targets(settings: AlertSettings) -> list[tuple[str, str]]:
    return [("webhook", url) for url in settings.webhook_urls] + [
        ("mail", address) for address in settings.mail_to
    ]


def _alert_json(row: AlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "subject": row.subject,
        "summary": row.summary,
        "raised_at": row.raised_at.isoformat(),
        "details": row.details,
    }


async def queue_digest(
    pool: Pool, clock: Clock, settings: AlertSettings, *, service: str, force: bool = False
) -> int:
    """Put every alert not yet notified into one digest, one notification per target;
    returns how many notifications were queued. Waits `digest_min_interval_seconds`
    after the previous digest unless `force`."""
    now = clock()
    async with pool.connection() as conn, conn.transaction():
        await store.lock_xact(conn, store.DIGEST_LOCK)
        last = await store.get_last_digest_at(conn)
        interval = timedelta(seconds=settings.digest_min_interval_seconds)
        if not force and last is not None and now - last < interval:
            return 0
        rows = await store.claim_unnotified_alerts(conn, now)
        if not rows:
            return 0
        where = targets(settings)
        if not where:
            return 0  # stored and listed; no channel configured
        payload = notify.build_payload(
            [_alert_json(r) for r in rows],
            service=service,
            now=now,
            max_items=settings.digest_max_items,
        )
        ids = await store.insert_notifications(
            conn, targets=where, payload=payload, alert_ids=[r.id for r in rows], now=now
        )
    log.info(
        "alert_digest_queued",
        extra={"fields": {"alerts": len(rows), "notifications": len(ids)}},
    )
    return len(ids)


async def send_due(
    pool: Pool,
    senders: Senders,
    clock: Clock,
    settings: AlertSettings,
    *,
    owner: str,
    jitter: Callable[[], float] = random.random,
    limit: int = 100,
) -> int:
    """Send the due notifications; returns how many were sent."""
    async with pool.connection() as conn, conn.transaction():
        claimed = await store.claim_due_notifications(
            conn, now=clock(), owner=owner, lease_seconds=LEASE_SECONDS, limit=limit
        )
    sent = 0
    for n in claimed:
        if await _send_one(pool, senders, clock, settings, owner, n, jitter):
            sent += 1
    return sent


async def _send_one(
    pool: Pool,
    senders: Senders,
    clock: Clock,
    settings: AlertSettings,
    owner: str,
    n: ClaimedNotification,
    jitter: Callable[[], float],
) -> bool:
    error: DeliveryError | None = None
    try:
        if n.channel == "webhook":
            secret = settings.webhook_secret
            await notify.post_webhook(
                senders,
                n.target,
                n.payload,
                secret=secret.get_secret_value() if secret else None,
                now=clock(),
            )
        else:
            await notify.send_mail(senders, n.target, n.payload, now=clock())
    except DeliveryError as exc:
        error = exc
    now = clock()
    state, next_at, text = "sent", None, None
    if error is not None:
        text = str(error.reason)[:500]
        expired = now - n.created_at >= timedelta(hours=settings.retry_max_hours)
        if isinstance(error, PermanentDeliveryError) or expired:
            state = "failed"
        else:
            state = "pending"
            delay = backoff_seconds(
                n.attempts,
                initial=settings.retry_initial_seconds,
                cap=RETRY_CAP_SECONDS,
                jitter=jitter(),
            )
            next_at = now + timedelta(seconds=delay)
    async with pool.connection() as conn:
        await store.mark_notification(
            conn,
            notification_id=n.id,
            owner=owner,
            state=state,
            now=now,
            next_attempt_at=next_at,
            error=text,
        )
    metrics.ALERT_NOTIFICATIONS.labels(n.channel, state).inc()
    fields = {"channel": n.channel, "notification": n.id, "state": state, "error": text}
    log.log(
        logging.INFO if state == "sent" else logging.WARNING,
        "alert_notification",
        extra={"fields": fields},
    )
    return state == "sent"


async def run_round(
    pool: Pool,
    senders: Senders,
    clock: Clock,
    settings: Settings,
    *,
    owner: str,
    jitter: Callable[[], float] = random.random,
    dkim: DkimWatch | None = None,
) -> Round:
    """Evaluate (when enabled; dkim_mismatch with `dkim`, which the caller keeps from
    round to round), queue a digest, send what is due."""
    alerts = settings.alerts
    evaluators: dict[str, Evaluator] = dict(conditions.CONDITIONS)
    if dkim is not None:
        evaluators[conditions.DKIM_MISMATCH] = dkim
    result = await evaluate(pool, clock, alerts, evaluators) if alerts.enabled else Round()
    result.notifications_queued = await queue_digest(pool, clock, alerts, service=senders.submitter)
    result.notifications_sent = await send_due(
        pool, senders, clock, alerts, owner=owner, jitter=jitter
    )
    return result


async def send_test(
    pool: Pool, senders: Senders, clock: Clock, settings: AlertSettings, *, owner: str
) -> tuple[int, list[NotificationRow]]:
    """Store a test alert (resolved at once), send it to every target now; returns the
    number queued and the notifications as they ended."""
    now = clock()
    async with pool.connection() as conn, conn.transaction():
        await store.insert_resolved_alert(
            conn,
            kind=conditions.TEST,
            subject="",
            summary="test notification from tlsrpt alerts test",
            details={},
            now=now,
        )
    queued = await queue_digest(pool, clock, settings, service=senders.submitter, force=True)
    await send_due(pool, senders, clock, settings, owner=owner, jitter=lambda: 0.0)
    async with pool.connection() as conn:
        return queued, (await store.list_notifications(conn, queued) if queued else [])


async def list_alerts(
    pool: Pool,
    *,
    open_only: bool = False,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AlertRow]:
    """Alerts, newest first."""
    async with pool.connection() as conn:
        return await store.list_alerts(
            conn, open_only=open_only, kind=kind, before_id=before_id, limit=limit
        )


async def open_counts(pool: Pool) -> dict[str, int]:
    async with pool.connection() as conn:
        return dict(await store.list_open_counts(conn))


async def purge_expired(pool: Pool, clock: Clock) -> int:
    async with pool.connection() as conn, conn.transaction():
        return await store.delete_before(conn, clock() - KEPT)
