from app.resources import Resources


async def test_database_is_migrated(resources: Resources) -> None:
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM api_tokens")
        assert (await cur.fetchone()) == (0,)
