"""Token lifecycle: create (the secret is shown once), list, revoke, authenticate.

Tokens are 256-bit random secrets, so a single SHA-256 digest is a safe way to store
them (no password-style stretching is needed for high-entropy secrets). Authentication
results are cached for a few seconds per process, so a request does not cost a query;
a revocation NOTIFYs every instance, whose listener (app.tokens.revocations) drops the
token from its cache at once, and the cache's lifetime (`auth_cache_seconds`, default
`CACHE_SECONDS`) bounds it when a notification is missed.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg import errors

from app.clock import Clock
from app.db.pool import Pool
from app.tokens import store

TOKEN_PREFIX = "tlsrpt_"  # noqa: S105 (a prefix, not a secret)
CACHE_SECONDS = 10.0


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"
    # The path token of the public rua endpoint for incoming reports.
    INBOUND = "inbound"
    # GET /metrics, when TLSRPT_METRICS__REQUIRE_TOKEN is true.
    METRICS = "metrics"


class TokenNameTakenError(Exception):
    """An active token already has this name."""


@dataclass(frozen=True)
class TokenInfo:
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_token(pool: Pool, name: str, scopes: list[Scope], *, clock: Clock) -> str:
    """Create a token and return its secret; only the digest is stored.

    The default clock serves only tests/conftest.py, which does not pass one yet."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        async with pool.connection() as conn:
            await store.insert_token(
                conn,
                name=name,
                scopes=sorted({s.value for s in scopes}),
                token_hash=hash_token(token),
                now=clock(),
            )
    except errors.UniqueViolation:
        raise TokenNameTakenError(name) from None
    return token


async def list_tokens(pool: Pool) -> list[TokenInfo]:
    async with pool.connection() as conn:
        return [TokenInfo(*row) for row in await store.list_tokens(conn)]


async def revoke_token(pool: Pool, name: str, *, clock: Clock) -> bool:
    async with pool.connection() as conn:
        return await store.mark_revoked(conn, name, now=clock()) > 0


class Authenticator:
    """Maps a presented token to its scopes, with a short per-process cache that
    `RevocationListener` (app.tokens.revocations) empties of revoked tokens at once."""

    def __init__(
        self,
        pool: Pool,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self._pool = pool
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[bytes, tuple[float, frozenset[str] | None]] = {}
        # Counts forgets: an answer read before one is not cached (it may predate it).
        self._generation = 0

    async def scopes(self, token: str) -> frozenset[str] | None:
        """The token's scopes, or None for an unknown or revoked token."""
        return await self.scopes_of_digest(hash_token(token))

    async def scopes_of_digest(self, digest: bytes) -> frozenset[str] | None:
        """As `scopes`, for a token known by its digest (a web session keeps only that)."""
        now = self._monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        async with self._pool.connection() as conn:
            found = await store.get_active_scopes(conn, digest)
        result = None if found is None else frozenset(found)
        if generation != self._generation:
            return result
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.cache_seconds, result)
        return result

    def cached(self) -> int:
        """How many tokens are cached."""
        return len(self._cache)

    def forget(self, digest: bytes) -> None:
        """Drop one token (by its digest): it was revoked."""
        self._generation += 1
        self._cache.pop(digest, None)

    def forget_all(self) -> None:
        """Drop every entry: revocations may have been missed."""
        self._generation += 1
        self._cache.clear()


async def session_key(pool: Pool, *, clock: Clock) -> bytes:
    """The key that signs web session cookies, shared by every instance through the
    database (made on first use; see migration 0010)."""
    async with pool.connection() as conn:
        return await store.upsert_session_key(conn, key=secrets.token_bytes(32), now=clock())


async def end_session(pool: Pool, session_id: str, expires_at: datetime, *, clock: Clock) -> None:
    """Sign a web session out for good: its cookie is refused from now on, wherever it is."""
    async with pool.connection() as conn, conn.transaction():
        await store.insert_ended_session(
            conn, session_hash=hash_token(session_id), expires_at=expires_at, now=clock()
        )


async def session_ended(pool: Pool, session_id: str) -> bool:
    async with pool.connection() as conn:
        return await store.get_session_ended(conn, hash_token(session_id))
