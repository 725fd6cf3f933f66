"""SQL for api_tokens; `now` is the caller's clock (app.clock)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

Conn = AsyncConnection[tuple[Any, ...]]


async def insert_token(
    conn: Conn, *, name: str, scopes: list[str], token_hash: bytes, now: datetime
) -> int:
    cur = await conn.execute(
        """
        INSERT INTO api_tokens (name, scopes, token_hash, created_at)
        VALUES (%(name)s, %(scopes)s, %(token_hash)s, %(now)s)
        RETURNING id
        """,
        {"name": name, "scopes": scopes, "token_hash": token_hash, "now": now},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def get_active_scopes(conn: Conn, token_hash: bytes) -> list[str] | None:
    cur = await conn.execute(
        "SELECT scopes FROM api_tokens WHERE token_hash = %(h)s AND revoked_at IS NULL",
        {"h": token_hash},
    )
    row = await cur.fetchone()
    return None if row is None else list(row[0])


async def list_tokens(conn: Conn) -> list[tuple[str, list[str], datetime, datetime | None]]:
    cur = await conn.execute(
        "SELECT name, scopes, created_at, revoked_at FROM api_tokens ORDER BY name, created_at"
    )
    return [(r[0], list(r[1]), r[2], r[3]) for r in await cur.fetchall()]


# The channel that tells every instance a token was revoked; the payload is its digest
# in hex. Sent in the revoking transaction, so delivered only when it commits.
REVOKED_CHANNEL = "tlsrpt_token_revoked"


async def mark_revoked(conn: Conn, name: str, *, now: datetime) -> int:
    """Revoke the active token of this name and NOTIFY REVOKED_CHANNEL of its digest."""
    cur = await conn.execute(
        """
        WITH revoked AS (
            UPDATE api_tokens SET revoked_at = %(now)s
            WHERE name = %(name)s AND revoked_at IS NULL
            RETURNING token_hash
        )
        SELECT pg_notify(%(channel)s, encode(token_hash, 'hex')) FROM revoked
        """,
        {"name": name, "now": now, "channel": REVOKED_CHANNEL},
    )
    return len(await cur.fetchall())


async def listen_revoked(conn: Conn) -> None:
    """LISTEN on REVOKED_CHANNEL (an autocommit connection of its own)."""
    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REVOKED_CHANNEL)))


async def get_alive(conn: Conn) -> None:
    """A round trip: raises when the connection is gone."""
    await conn.execute("SELECT 1")


async def upsert_session_key(conn: Conn, *, key: bytes, now: datetime) -> bytes:
    """The stored session key; `key` is stored first when there is none yet."""
    cur = await conn.execute(
        """
        INSERT INTO ui_session_key (id, key, created_at) VALUES (1, %(key)s, %(now)s)
        ON CONFLICT (id) DO UPDATE SET key = ui_session_key.key
        RETURNING key
        """,
        {"key": key, "now": now},
    )
    row = await cur.fetchone()
    assert row is not None
    return bytes(row[0])


async def insert_ended_session(
    conn: Conn, *, session_hash: bytes, expires_at: datetime, now: datetime
) -> None:
    """Record a signed-out session until its cookie would expire; forget expired ones."""
    await conn.execute("DELETE FROM ui_ended_sessions WHERE expires_at <= %(now)s", {"now": now})
    await conn.execute(
        """
        INSERT INTO ui_ended_sessions (session_hash, expires_at)
        VALUES (%(h)s, %(expires_at)s) ON CONFLICT (session_hash) DO NOTHING
        """,
        {"h": session_hash, "expires_at": expires_at},
    )


async def get_session_ended(conn: Conn, session_hash: bytes) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM ui_ended_sessions WHERE session_hash = %(h)s", {"h": session_hash}
    )
    return await cur.fetchone() is not None
