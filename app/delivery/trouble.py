"""Delivery trouble as the alerts see it (RFC 8460 §5.5: a report not delivered in 24 h).

Reads only: rua whose deliveries fail (permanently, or after 24 hours of retries) and do
not work again since, days whose reports are not all delivered a day after they were
built, and the number of deliveries in each state (a metric).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from app.db.pool import Pool
from app.delivery import trouble_store
from app.delivery.trouble_store import FailedRua, UndeliveredDay

__all__ = ["DELIVERY_DEADLINE", "FailedRua", "UndeliveredDay"]

# RFC 8460 §5.5: delivery is attempted for up to 24 hours.
DELIVERY_DEADLINE = timedelta(hours=24)


async def failed_ruas(pool: Pool, since: datetime) -> list[FailedRua]:
    async with pool.connection() as conn:
        return await trouble_store.list_failed_ruas(conn, since)


async def undelivered_days(pool: Pool, now: datetime, lookback: timedelta) -> list[UndeliveredDay]:
    """Days with reports built more than DELIVERY_DEADLINE ago not all delivered."""
    async with pool.connection() as conn:
        return await trouble_store.list_undelivered_days(
            conn, built_before=now - DELIVERY_DEADLINE, from_day=(now - lookback).date()
        )


async def delivery_states(pool: Pool) -> dict[str, int]:
    """How many deliveries are in each state."""
    async with pool.connection() as conn:
        return dict(await trouble_store.list_state_counts(conn))
