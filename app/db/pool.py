"""The psycopg 3 async connection pool shared by every service of one process, with the
process's view of database outages (`app.db.outage`)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from app.config import DatabaseSettings
from app.db.outage import DatabaseOutage


class Pool(AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]):
    """The pool, and whether the database is away right now (logged once per outage)."""

    outage: DatabaseOutage


async def open_pool(url: str, settings: DatabaseSettings, *, wait: bool = True) -> Pool:
    """Open a pool and wait until its first connections are up.

    With `wait=False` it connects in the background and `connection()` raises PoolTimeout
    while the server is unreachable (the collector starts and spools meanwhile).
    """
    outage = DatabaseOutage()
    pool = Pool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={
            "row_factory": tuple_row,
            "connect_timeout": max(1, int(settings.connect_timeout_seconds)),
        },
        open=False,
        name="tlsrpt",
        # Bounds every `connection()` wait: an outage becomes PoolTimeout (a 503), fast.
        timeout=settings.acquire_timeout_seconds,
        # A connection the server dropped (a restart) is replaced before a caller gets it.
        check=AsyncConnectionPool.check_connection,
        configure=outage.connected,
    )
    pool.outage = outage
    await pool.open(wait=wait, timeout=settings.connect_timeout_seconds)
    return pool
