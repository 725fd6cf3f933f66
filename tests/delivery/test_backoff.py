"""Retry policy (RFC 8460 §5.5): exponential with jitter, up to 24 h, then failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.config import DeliverySettings
from app.delivery.backoff import next_attempt_at, retry_delay

START = datetime(2024, 5, 2, 4, 0, tzinfo=UTC)


def test_delays_grow_exponentially_and_jitter_stretches_them() -> None:
    settings = DeliverySettings(retry_initial_seconds=60, retry_factor=3)
    assert [retry_delay(n, settings, 0.0).total_seconds() for n in (1, 2, 3, 4)] == [
        60,
        180,
        540,
        1620,
    ]
    assert retry_delay(1, settings, 0.999).total_seconds() < 60 * 1.25
    assert retry_delay(1, settings, 0.5).total_seconds() == 60 * 1.125
    assert retry_delay(10_000, settings, 0.0) == timedelta(hours=24)


def test_a_day_of_failures_ends_in_failed_with_a_last_try_at_the_deadline() -> None:
    settings = DeliverySettings(retry_initial_seconds=300, retry_factor=2, retry_max_hours=24)
    now, attempts, times = START, 1, []
    while True:
        after = next_attempt_at(
            first_attempt_at=START,
            failed_at=now,
            attempts=attempts,
            settings=settings,
            jitter=lambda: 0.5,
        )
        if after is None:
            break
        assert after > now
        times.append(after)
        now, attempts = after, attempts + 1
    assert times[0] == START + timedelta(seconds=300 * 1.125)
    assert times[-1] == START + timedelta(hours=24)
    assert now == START + timedelta(hours=24)
    assert 8 <= len(times) <= 12


def test_failure_after_the_deadline_is_final() -> None:
    settings = DeliverySettings(retry_max_hours=1)
    late = START + timedelta(hours=1, seconds=1)
    assert (
        next_attempt_at(
            first_attempt_at=START,
            failed_at=late,
            attempts=3,
            settings=settings,
            jitter=lambda: 0.0,
        )
        is None
    )
