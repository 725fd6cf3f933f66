"""`POST /v1/tallies`: exact counters in, the same counters out of the day results."""

from __future__ import annotations

from datetime import date
from typing import Any

import httpx

from app.ingest.service import close_day
from app.resources import Resources
from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer

DAY = "2026-11-24"  # the FakeClock's day


def tallies(batch_id: str | None = "b-1", day: str = DAY) -> dict[str, Any]:
    body: dict[str, Any] = {
        "day": day,
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-domain": "Example.ORG.",
                    "policy-string": ["version: STSv1", "mode: enforce"],
                    "mx-host": ["*.Example.org"],
                },
                # A success with a detail attached, and one failure with two details:
                # counts /v1/results can not express.
                "summary": {
                    "total-successful-session-count": 7,
                    "total-failure-session-count": 1,
                },
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "receiving-ip": "2001:DB8::1",
                        "failed-session-count": 2,
                    },
                    {"result-type": "sts-webpki-invalid", "failed-session-count": 1},
                ],
                "recipient-domains": [
                    {
                        "recipient-domain": "example.org",
                        "total-successful-session-count": 7,
                        "total-failure-session-count": 1,
                    }
                ],
            },
            {
                "policy": {"policy-type": "no-policy-found", "policy-domain": "b.example"},
                "summary": {
                    "total-successful-session-count": 3,
                    "total-failure-session-count": 0,
                },
            },
        ],
    }
    if batch_id is not None:
        body["batch-id"] = batch_id
    return body


async def day_results(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await client.get(f"/v1/days/{DAY}/results", headers=bearer(token))
    assert response.status_code == 200, response.text
    return {d["policy-domain"]: d["policies"] for d in response.json()["policy-domains"]}


async def test_counters_are_recorded_exactly_and_once_per_batch_id(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token(Scope.INGEST, Scope.READ)
    response = await client.post("/v1/tallies", json=tallies(), headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"policies": 2, "sessions": 11, "recorded": True}

    again = await client.post("/v1/tallies", json=tallies(), headers=bearer(token))
    assert again.status_code == 200
    assert again.json()["recorded"] is False

    results = await day_results(client, token)
    (sts,) = results["example.org"]
    assert sts["policy"]["mx-host"] == ["*.example.org"]
    assert sts["summary"] == {
        "total-successful-session-count": 7,
        "total-failure-session-count": 1,
    }
    assert sorted(
        (d["result-type"], d.get("receiving-ip"), d["failed-session-count"])
        for d in sts["failure-details"]
    ) == [("certificate-expired", "2001:db8::1", 2), ("sts-webpki-invalid", None, 1)]
    (npf,) = results["b.example"]
    assert npf["summary"]["total-successful-session-count"] == 3

    # Without a batch id every post counts.
    for _ in range(2):
        response = await client.post(
            "/v1/tallies", json=tallies(batch_id=None), headers=bearer(token)
        )
        assert response.json()["recorded"] is True
    (npf,) = (await day_results(client, token))["b.example"]
    assert npf["summary"]["total-successful-session-count"] == 9


async def test_an_invalid_policy_is_named_and_nothing_is_stored(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token(Scope.INGEST, Scope.READ)
    body = tallies()
    body["policies"][1]["policy"]["policy-type"] = "dane"
    body["policies"][0]["failure-details"][0]["receiving-ip"] = "not-an-ip"
    response = await client.post("/v1/tallies", json=body, headers=bearer(token))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_results"
    fields = {(d["index"], d["field"]) for d in error["details"]}
    assert (1, "policy.policy-type") in fields
    assert (0, "failure-details.0.receiving-ip") in fields
    assert await day_results(client, token) == {}


async def test_bad_envelopes_and_counts_are_refused(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    token = await make_token(Scope.INGEST)
    cases: list[tuple[dict[str, Any], str]] = []
    success_detail = tallies()
    success_detail["policies"][0]["failure-details"][0]["result-type"] = "success"
    cases.append((success_detail, "failure-details.0"))
    too_many = tallies()
    too_many["policies"][0]["recipient-domains"][0]["total-failure-session-count"] = 2
    cases.append((too_many, "recipient-domains"))
    negative = tallies()
    negative["policies"][1]["summary"]["total-successful-session-count"] = -1
    cases.append((negative, "summary.total-successful-session-count"))
    for body, field in cases:
        response = await client.post("/v1/tallies", json=body, headers=bearer(token))
        assert response.status_code == 422, body
        assert any(field in (d["field"] or "") for d in response.json()["error"]["details"])

    old = await client.post("/v1/tallies", json=tallies(day="2020-01-01"), headers=bearer(token))
    assert old.status_code == 422
    assert old.json()["error"]["details"][0]["field"] == "day"
    future = await client.post("/v1/tallies", json=tallies(day="2026-11-26"), headers=bearer(token))
    assert future.status_code == 422
    bad_id = await client.post("/v1/tallies", json=tallies(batch_id="a b"), headers=bearer(token))
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["details"][0]["field"] == "batch-id"


async def test_a_closed_day_gets_409_and_a_read_token_403(
    client: httpx.AsyncClient, make_token: MakeToken, resources: Resources
) -> None:
    reader = await make_token(Scope.READ)
    response = await client.post("/v1/tallies", json=tallies(), headers=bearer(reader))
    assert response.status_code == 403

    token = await make_token(Scope.INGEST)
    await close_day(resources.pool, resources.clock, date(2026, 11, 24))
    response = await client.post("/v1/tallies", json=tallies(), headers=bearer(token))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "day_closed"
