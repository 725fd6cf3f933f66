"""Migrations build the schema from an empty database; /readyz tells migrated from not."""

from __future__ import annotations

import httpx
import psycopg
from pydantic import SecretStr

from app.config import Settings
from app.db.migrate import expected_heads, upgrade
from app.db.pool import open_pool
from app.main import create_app
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrations_apply_from_empty_and_are_idempotent(empty_database_url: str) -> None:
    assert tables(empty_database_url) == set()
    upgrade(empty_database_url)
    created = tables(empty_database_url)
    assert {"api_tokens", "days", "policy_counts", "failure_counts", "alembic_version"} <= created
    upgrade(empty_database_url)
    assert tables(empty_database_url) == created
    with psycopg.connect(empty_database_url) as conn:
        heads = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
    assert heads == set(expected_heads())


async def test_readyz_is_503_until_migrated(empty_database_url: str) -> None:
    settings = Settings(database_url=SecretStr(empty_database_url))
    pool = await open_pool(empty_database_url, settings.database)
    resources = Resources(
        settings=settings, pool=pool, resolver=FakeResolver(), expected_heads=expected_heads()
    )
    app = create_app(settings, resources)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            assert (await client.get("/healthz")).status_code == 200
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "not_migrated"
            upgrade(empty_database_url)
            assert (await client.get("/readyz")).json() == {"status": "ready"}
    finally:
        await pool.close()


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    settings = Settings(database_url=SecretStr("postgresql://postgres@127.0.0.1:1/nothing"))
    # The pool's wait for a connection is bounded (database.acquire_timeout_seconds).
    pool = await open_pool(
        "postgresql://postgres@127.0.0.1:1/nothing", settings.database, wait=False
    )
    resources = Resources(
        settings=settings, pool=pool, resolver=FakeResolver(), expected_heads=expected_heads()
    )
    app = create_app(settings, resources)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "database_unavailable"
    finally:
        await pool.close()
