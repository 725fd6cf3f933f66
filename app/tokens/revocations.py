"""Revocation at once, in every instance: a dedicated connection LISTENs on the channel
`mark_revoked` NOTIFYs in the revoking transaction, and drops the revoked token from
this process's authentication cache as the notification arrives.

The connection is the listener's own (a pooled one would be handed to other work and
miss notifications). When it is lost, the whole cache is dropped (a notification may
have been missed meanwhile) and it reconnects with the one backoff rule; while it is
down, the cache's lifetime (`auth_cache_seconds`) still bounds how long a revoked token
works. Every `KEEPALIVE_SECONDS` without a notification the connection is checked, so a
silently dead one is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import psycopg

from app.backoff import backoff_seconds
from app.db.pool import Pool
from app.tokens import store
from app.tokens.service import Authenticator

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
KEEPALIVE_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10
# How the listening connection shows in pg_stat_activity.
APPLICATION_NAME = "tlsrpt-revocations"
RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0


class RevocationListener:
    """Keeps `authenticator`'s cache in step with revocations; `start`, then `stop`."""

    def __init__(
        self,
        pool: Pool,
        authenticator: Authenticator,
        *,
        sleep: Sleep = asyncio.sleep,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        # The pool's server and credentials, on a connection outside the pool.
        if not isinstance(pool.conninfo, str):
            raise TypeError("the pool's conninfo must be a string")
        self._conninfo = pool.conninfo
        self._authenticator = authenticator
        self._sleep = sleep
        self._keepalive = keepalive_seconds
        self._task: asyncio.Task[None] | None = None
        # Set each time LISTEN is in place (tests wait on it).
        self.listening = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="token-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                # Notifications sent while the connection was away are lost: forget all.
                self._authenticator.forget_all()
                failures += 1
                delay = backoff_seconds(
                    failures, initial=RETRY_INITIAL_SECONDS, cap=RETRY_MAX_SECONDS
                )
                log.warning(
                    "token_revocations_listen_failed",
                    extra={
                        "fields": {
                            "error": type(exc).__name__,
                            "retry_in_seconds": round(delay, 2),
                            "fallback_seconds": self._authenticator.cache_seconds,
                        }
                    },
                )
                await self._sleep(delay)
            else:
                failures = 0

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
        )
        async with conn:
            await store.listen_revoked(conn)
            # Revocations before LISTEN was in place were not heard: forget all once.
            self._authenticator.forget_all()
            self.listening.set()
            log.info("token_revocations_listening", extra={"fields": {}})
            while True:
                async for notify in conn.notifies(timeout=self._keepalive):
                    try:
                        digest = bytes.fromhex(notify.payload)
                    except ValueError:
                        self._authenticator.forget_all()
                    else:
                        self._authenticator.forget(digest)
                await store.get_alive(conn)
