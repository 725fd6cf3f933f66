"""Database outages as one process sees them: which errors mean "not now", and one log
line when the database goes away and one when it is back, however many requests and
loop rounds fail in between.

"Not now" is psycopg's `OperationalError` family: connection refused or lost, admin
shutdown, the pool's timeout while no connection can be had, serialization failures
and deadlocks. The API answers them with 503 and `Retry-After`; the loops back off.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# What to catch for "the database is not available now": PoolTimeout, AdminShutdown,
# SerializationFailure and DeadlockDetected are all OperationalErrors.
UNAVAILABLE = psycopg.OperationalError


def describe(exc: BaseException) -> str:
    """A short reason for the log: the class and psycopg's first line (no secrets: the
    connection string never appears in psycopg's messages)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__


class DatabaseOutage:
    """Whether the process currently sees the database as away. `failed` is called by
    whoever meets an outage error, `connected` by the pool for each new connection."""

    def __init__(self) -> None:
        self.down = False

    def failed(self, seen_by: str, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            fields = {"seen_by": seen_by, "reason": describe(exc)}
            log.warning("database_unavailable", extra={"fields": fields})

    async def connected(self, _conn: Any) -> None:
        """The pool's `configure` hook: a new connection means the database answers."""
        if self.down:
            self.down = False
            log.warning("database_available")
