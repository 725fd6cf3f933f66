"""Test fixtures: a real PostgreSQL built by the real migrations.

The server is `TLSRPT_TEST_DATABASE_URL` (or `TLSRPT_DATABASE_URL`) when set, else an
embedded one (pgserver) in a temporary directory. Migrations run once per session (per
pytest-xdist worker) into a database the session's tests share:

- `database_url`: for tests that commit and use several connections (a pool, a
  subprocess); the database is emptied after the test (tests/database.py).
- `db_conn`: one connection in a transaction rolled back after the test, for tests that
  need neither a commit nor a second connection.
- `empty_database_url`: a database of the test's own with no schema (migration tests).

Database names carry the process id, so several test runs can share one server.
"""

from __future__ import annotations

import itertools
import os
import secrets
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from app.config import Settings
from app.db.migrate import expected_heads, upgrade
from app.db.pool import open_pool
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.clock import FakeClock
from tests.database import SharedDatabase
from tests.dns.fake_resolver import FakeResolver

_RUN = f"{os.getpid()}_{secrets.token_hex(3)}"
_counter = itertools.count()


def _with_database(url: str, name: str) -> str:
    """Same server, another database (URL or conninfo with a `host=` query)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo("", **info)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin connection string of the PostgreSQL server used by this test session."""
    url = os.environ.get("TLSRPT_TEST_DATABASE_URL") or os.environ.get("TLSRPT_DATABASE_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        tmp = Path(tempfile.mkdtemp(prefix="tlsrpt-test-pg-"))
        server = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri("postgres")
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()


def _admin(server_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="session")
def shared_database(server_url: str) -> Iterator[SharedDatabase]:
    """The migrated database of this session's tests."""
    name = f"tlsrpt_t_{_RUN}"
    _admin(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _with_database(server_url, name)
        upgrade(url)
        database = SharedDatabase(url)
        try:
            yield database
        finally:
            database.close()
    finally:
        drop_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    _admin(
        server_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


@pytest.fixture
def database_url(shared_database: SharedDatabase) -> Iterator[str]:
    """The migrated database, empty; the test may commit and connect as often as it likes."""
    try:
        yield shared_database.url
    finally:
        shared_database.reset()


@pytest.fixture
async def db_conn(
    shared_database: SharedDatabase,
) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    """A connection to the migrated, empty database, in a transaction rolled back after the
    test (`conn.transaction()` inside it is a savepoint; `commit()` is refused)."""
    try:
        async with (
            await psycopg.AsyncConnection.connect(shared_database.url, autocommit=True) as conn,
            conn.transaction(force_rollback=True),
        ):
            yield conn
    finally:
        # Sequences advance outside transactions.
        shared_database.reset()


@pytest.fixture
def empty_database_url(server_url: str) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    name = f"tlsrpt_e_{_RUN}_{next(_counter)}"
    _admin(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=SecretStr(database_url), data_dir=tmp_path / "data")


@pytest.fixture
async def resources(
    settings: Settings, database_url: str, clock: FakeClock
) -> AsyncIterator[Resources]:
    pool = await open_pool(database_url, settings.database)
    res = Resources(
        settings=settings,
        pool=pool,
        resolver=FakeResolver(),
        clock=clock,
        expected_heads=expected_heads(),
    )
    try:
        yield res
    finally:
        await res.close()


@pytest.fixture
async def client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client speaking to the app in process (no lifespan: resources are given)."""
    app = create_app(resources.settings, resources)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


MakeToken = Callable[..., Awaitable[str]]


@pytest.fixture
def make_token(resources: Resources) -> MakeToken:
    """`await make_token(Scope.INGEST, ...)` -> a bearer token with those scopes."""

    async def make(*scopes: Scope, name: str | None = None) -> str:
        return await create_token(
            resources.pool,
            name or f"test-{secrets.token_hex(4)}",
            list(scopes) or [Scope.READ],
            clock=resources.clock,
        )

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
