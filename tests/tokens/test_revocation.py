"""Revocation at once, everywhere: two real `tlsrpt serve` instances with a long auth
cache, a token revoked by the CLI, refused by the very next request of each instance;
and the listener's reconnection after its connection is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from app.resources import Resources
from app.tokens.revocations import APPLICATION_NAME, RevocationListener
from app.tokens.service import Authenticator, Scope, revoke_token
from tests.conftest import MakeToken
from tests.e2e.test_serve_embedded import free_port, wait_ready
from tests.wait import until, until_awaited, until_blocking

ROOT = Path(__file__).resolve().parents[2]
# Long enough that only the notification can explain a revoked token refused in time.
CACHE_SECONDS = "600"


def env_for(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env.update(
        TLSRPT_DATABASE_URL=database_url,
        TLSRPT_AUTH_CACHE_SECONDS=CACHE_SECONDS,
        TLSRPT_LOG_LEVEL="WARNING",
    )
    return env


def tlsrpt(database_url: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env_for(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.fixture
def two_instances(database_url: str) -> Iterator[list[str]]:
    with ExitStack() as stack:
        bases = []
        for _ in range(2):
            port = free_port()
            server = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "app", "serve", "--port", str(port)],
                    cwd=ROOT,
                    env=env_for(database_url),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
            stack.callback(server.terminate)
            base = f"http://127.0.0.1:{port}"
            wait_ready(server, base)
            bases.append(base)
        yield bases


def listeners(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %(name)s",
            {"name": APPLICATION_NAME},
        ).fetchone()
    return int(row[0]) if row else 0


def test_revoked_token_refused_by_the_next_request_of_every_instance(
    database_url: str, two_instances: list[str]
) -> None:
    token = tlsrpt(database_url, "token", "create", "--scope", "read", "--name", "ops")
    token = token.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    until_blocking(lambda: listeners(database_url) == 2, "both instances LISTEN")
    for base in two_instances:
        # Cached now in each instance, for CACHE_SECONDS.
        assert httpx.get(f"{base}/v1/inbound/reports", headers=headers).status_code == 200
        assert httpx.get(f"{base}/v1/inbound/reports", headers=headers).status_code == 200
    tlsrpt(database_url, "token", "revoke", "ops")
    for base in two_instances:
        response = httpx.get(f"{base}/v1/inbound/reports", headers=headers)
        assert response.status_code == 401, response.text


async def test_listener_reconnects_and_forgets_all_after_losing_its_connection(
    resources: Resources, make_token: MakeToken
) -> None:
    authenticator = resources.authenticator
    authenticator.cache_seconds = 600.0
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    listener = RevocationListener(resources.pool, authenticator, sleep=sleep)
    listener.start()
    try:
        await until(listener.listening.is_set, "the listener LISTENs")
        kept = await make_token(Scope.READ, name="kept")
        gone = await make_token(Scope.READ, name="gone")
        assert await authenticator.scopes(kept) == frozenset({"read"})
        assert await authenticator.scopes(gone) == frozenset({"read"})
        async with resources.pool.connection() as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %(name)s AND datname = current_database()",
                {"name": APPLICATION_NAME},
            )
        await until(lambda: delays, "the listener notices the lost connection")
        await until(listener.listening.is_set, "the listener LISTENs again")
        # A revocation while it was away could have been missed: the cache was emptied,
        # and the revocation after reconnecting arrives as usual.
        async with resources.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM api_tokens")
            assert await cur.fetchone() == (2,)
        assert authenticator.cached() == 0
        assert await authenticator.scopes(gone) == frozenset({"read"})
        assert await revoke_token(resources.pool, "gone", clock=resources.clock)
        await until_awaited(
            lambda: _refused(authenticator, gone), "the revocation reaches the cache"
        )
        assert await authenticator.scopes(kept) == frozenset({"read"})
        assert delays == [0.5]
    finally:
        await listener.stop()


async def _refused(authenticator: Authenticator, token: str) -> bool:
    return await authenticator.scopes(token) is None
