from typing import Any

import psycopg


async def test_database_is_migrated(db_conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
    cur = await db_conn.execute("SELECT count(*) FROM api_tokens")
    assert (await cur.fetchone()) == (0,)
