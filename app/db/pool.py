"""The psycopg 3 async connection pool shared by every service of one process."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from app.config import DatabaseSettings

Pool = AsyncConnectionPool[AsyncConnection[tuple[Any, ...]]]


async def open_pool(url: str, settings: DatabaseSettings, *, wait: bool = True) -> Pool:
    """Open a pool and wait until its first connections are up.

    With `wait=False` it connects in the background and `connection()` raises PoolTimeout
    while the server is unreachable (the collector starts and spools meanwhile).
    """
    pool: Pool = AsyncConnectionPool(
        url,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        kwargs={
            "row_factory": tuple_row,
            "connect_timeout": max(1, int(settings.connect_timeout_seconds)),
        },
        open=False,
        name="tlsrpt",
    )
    await pool.open(wait=wait, timeout=settings.connect_timeout_seconds)
    return pool
