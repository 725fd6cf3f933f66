"""Delivery status (scope read) and the suppression list (scope admin) over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.clock import FakeClock
from tests.conftest import bearer
from tests.delivery.certs import LoopbackCa
from tests.delivery.conftest import dkim_pair, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import (
    DeliveryEnv,
    deliver,
    delivery_env,
    delivery_states,
    store_report,
)

DAY = date(2026, 11, 23)


@pytest.fixture
async def env(
    database_url: str,
    tmp_path: Path,
    test_ca: LoopbackCa,  # noqa: F811
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
    clock: FakeClock,
) -> AsyncIterator[DeliveryEnv]:
    async with delivery_env(database_url, tmp_path, test_ca, dkim_pair[0], clock) as e:
        yield e


@pytest.fixture
async def api(env: DeliveryEnv) -> AsyncIterator[tuple[Resources, httpx.AsyncClient]]:
    resources = await env.open_resources()
    transport = httpx.ASGITransport(app=create_app(resources.settings, resources))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield resources, client


async def headers(resources: Resources, scope: Scope) -> dict[str, str]:
    token = await create_token(resources.pool, f"t-{scope.value}", [scope], clock=resources.clock)
    return bearer(token)


async def test_deliveries_by_state_and_day_with_attempts(
    env: DeliveryEnv, api: tuple[Resources, httpx.AsyncClient]
) -> None:
    resources, client = api
    read = await headers(resources, Scope.READ)
    env.smtp.rcpt_replies.append("550 5.1.1 unknown user")
    pk = await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:gone@example.com", env.https_rua()],
        next_attempt_at=env.clock(),
    )
    await store_report(
        resources,
        day=DAY - timedelta(days=1),
        policy_domain="example.org",
        rua=["mailto:r@example.org"],
        next_attempt_at=env.clock() + timedelta(hours=1),
    )
    await deliver(resources, owner="t", limit=10)

    everything = (await client.get("/v1/deliveries", headers=read)).json()
    assert [d["state"] for d in everything["deliveries"]] == ["failed", "sent", "pending"]
    assert everything["next_after"] is None
    failed = (await client.get("/v1/deliveries?state=failed", headers=read)).json()
    [row] = failed["deliveries"]
    assert row["rua"] == "mailto:gone@example.com"
    assert "550 5.1.1 unknown user" in row["last_error"]
    older = await client.get(f"/v1/deliveries?day={DAY - timedelta(days=1)}", headers=read)
    assert [d["policy_domain"] for d in older.json()["deliveries"]] == ["example.org"]
    page = (await client.get("/v1/deliveries?limit=2", headers=read)).json()
    assert len(page["deliveries"]) == 2
    rest = await client.get(f"/v1/deliveries?after={page['next_after']}", headers=read)
    assert [d["state"] for d in rest.json()["deliveries"]] == ["pending"]

    detail = (await client.get(f"/v1/reports/{pk}/deliveries", headers=read)).json()
    by_rua = {d["rua"]: d for d in detail["deliveries"]}
    [attempt] = by_rua["mailto:gone@example.com"]["attempt_log"]
    assert attempt["outcome"] == "permanent"
    assert attempt["smtp_reply_code"] == 550
    assert attempt["excerpt"] == "550 5.1.1 unknown user"
    [attempt] = by_rua[env.https_rua()]["attempt_log"]
    assert (attempt["outcome"], attempt["http_status"]) == ("sent", 200)

    assert (await client.get("/v1/reports/999999/deliveries", headers=read)).status_code == 404
    bad = await client.get("/v1/deliveries?state=lost", headers=read)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "query.state"
    assert (await client.get("/v1/deliveries")).status_code == 401
    ingest_only = await headers(resources, Scope.INGEST)
    assert (await client.get("/v1/deliveries", headers=ingest_only)).status_code == 403


async def test_suppression_list(env: DeliveryEnv, api: tuple[Resources, httpx.AsyncClient]) -> None:
    resources, client = api
    admin = await headers(resources, Scope.ADMIN)
    read = await headers(resources, Scope.READ)
    assert (await client.get("/v1/suppressions", headers=read)).status_code == 403

    added = await client.post(
        "/v1/suppressions",
        json={"target": "Reports@Example.COM", "comment": "asked us to stop"},
        headers=admin,
    )
    assert added.status_code == 201, added.text
    assert added.json()["target"] == "mailto:Reports@example.com"
    assert added.json()["active"] is True
    assert datetime.fromisoformat(added.json()["created_at"]) == env.clock()
    expired_at = (env.clock() - timedelta(days=1)).isoformat()
    await client.post(
        "/v1/suppressions",
        json={"target": env.https_rua(), "comment": "old", "expires_at": expired_at},
        headers=admin,
    )
    listing = (await client.get("/v1/suppressions", headers=admin)).json()["suppressions"]
    assert [(s["target"], s["active"]) for s in listing] == [
        (env.https_rua(), False),
        ("mailto:Reports@example.com", True),
    ]

    for bad in (
        {"target": "not a target"},
        {"target": "a@x.example, b@y.example"},
        {"target": "ftp://x.example/"},
    ):
        refused = await client.post("/v1/suppressions", json=bad, headers=admin)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["details"][0]["field"] == "target"
    naive = await client.post(
        "/v1/suppressions",
        json={"target": "a@x.example", "expires_at": "2026-12-01T00:00:00"},
        headers=admin,
    )
    assert naive.status_code == 422

    # A suppressed rua is recorded as such and not sent; an expired suppression is ignored.
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:Reports@example.com", env.https_rua()],
        next_attempt_at=env.clock(),
    )
    assert await deliver(resources, owner="t", limit=10) == 1
    states = await delivery_states(resources)
    assert states["mailto:Reports@example.com"][0] == "suppressed"
    assert "asked us to stop" in (states["mailto:Reports@example.com"][2] or "")
    assert states[env.https_rua()][0] == "sent"
    assert env.smtp.messages == []

    sid = listing[1]["id"]
    assert (await client.delete(f"/v1/suppressions/{sid}", headers=admin)).status_code == 204
    assert (await client.delete(f"/v1/suppressions/{sid}", headers=admin)).status_code == 404
    metrics = (await client.get("/metrics")).text
    assert "tlsrpt_deliveries_suppressed_total" in metrics
