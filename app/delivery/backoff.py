"""When to try a failed delivery again: exponential backoff with jitter (RFC 8460 §5.5).

RFC 8460 §5.5 asks for redelivery attempts for up to 24 hours after the first attempt.
The wait follows the one backoff rule (`app.backoff`) with the delivery settings; the
last retry is moved up to the deadline; after the deadline the delivery has failed.
Pure: no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from app.backoff import backoff_seconds
from app.config import DeliverySettings


def retry_delay(attempts: int, settings: DeliverySettings, jitter: float) -> timedelta:
    """The wait after the `attempts`-th failed attempt (1 for the first failure)."""
    seconds = backoff_seconds(
        attempts,
        initial=settings.retry_initial_seconds,
        factor=settings.retry_factor,
        cap=settings.retry_max_hours * 3600.0,
        jitter=jitter,
    )
    return timedelta(seconds=seconds)


def next_attempt_at(
    *,
    first_attempt_at: datetime,
    failed_at: datetime,
    attempts: int,
    settings: DeliverySettings,
    jitter: Callable[[], float],
) -> datetime | None:
    """When to try again after a temporary failure, or None: the delivery has failed."""
    # RFC 8460 §5.5: no attempt after `retry_max_hours` (24 by default).
    deadline = first_attempt_at + timedelta(hours=settings.retry_max_hours)
    if failed_at >= deadline:
        return None
    return min(failed_at + retry_delay(attempts, settings, jitter()), deadline)
