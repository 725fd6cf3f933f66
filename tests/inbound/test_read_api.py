"""The read API of received reports: list with filters, one report, the summary."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from app.tokens.service import Scope
from tests.clock import FakeClock
from tests.conftest import MakeToken, bearer

JSON = {"Content-Type": "application/tlsrpt+json"}


def policy(
    domain: str, ok: int, failures: list[dict[str, Any]] | None = None, kind: str = "sts"
) -> dict[str, Any]:
    failed = sum(f["failed-session-count"] for f in failures or [])
    entry: dict[str, Any] = {
        "policy": {"policy-type": kind, "policy-domain": domain},
        "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
    }
    if failures:
        entry["failure-details"] = failures
    return entry


def failure(kind: str, n: int, mx: str | None = None, ip: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"result-type": kind, "failed-session-count": n}
    if mx:
        item["receiving-mx-hostname"] = mx
    if ip:
        item["receiving-ip"] = ip
        item["sending-mta-ip"] = "198.51.100.7"
    return item


def report(org: str, rid: str, day: str, policies: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        {
            "organization-name": org,
            "date-range": {
                "start-datetime": f"{day}T00:00:00Z",
                "end-datetime": f"{day}T23:59:59Z",
            },
            "contact-info": "tlsrpt@sender.example",
            "report-id": rid,
            "policies": policies,
        }
    )


REPORTS = {
    "a": report("Google Inc.", "a", "2024-05-01", [policy("example.com", 40)]),
    "b": report(
        "Microsoft",
        "b",
        "2024-05-01",
        [
            policy(
                "example.com",
                10,
                [
                    failure("certificate-expired", 5, "mx1.example.com", "192.0.2.1"),
                    failure("certificate-expired", 2, "mx1.example.com", "192.0.2.2"),
                    failure("starttls-not-supported", 3, "mx2.example.com", "192.0.2.3"),
                    failure("x-new-kind", 1),
                ],
            ),
            policy("mx1.example.com", 4, [failure("tlsa-invalid", 6, "mx1.example.com")], "tlsa"),
        ],
    ),
    "c": report(
        "Google Inc.",
        "c",
        "2024-05-02",
        [policy("other.example", 1, [failure("dane-required", 2)])],
    ),
    "d": report("Google Inc.", "d", "2024-05-03", [policy("example.com", 7)]),
}


@pytest.fixture
async def ids(client: httpx.AsyncClient, rua: str) -> dict[str, int]:
    result = {}
    for key, body in REPORTS.items():
        response = await client.post(rua, content=body, headers=JSON)
        assert response.status_code == 201, response.text
        result[key] = response.json()["id"]
    return result


async def listed(client: httpx.AsyncClient, reader: dict[str, str], **params: Any) -> list[str]:
    response = await client.get("/v1/inbound/reports", params=params, headers=reader)
    assert response.status_code == 200, response.text
    return [r["report_id"] for r in response.json()["reports"]]


async def test_list_filters(
    client: httpx.AsyncClient, reader: dict[str, str], ids: dict[str, int]
) -> None:
    assert await listed(client, reader) == ["d", "c", "b", "a"]
    assert await listed(client, reader, domain="Example.COM.") == ["d", "b", "a"]
    assert await listed(client, reader, domain="mx1.example.com") == ["b"]
    assert await listed(client, reader, organization="Google Inc.") == ["d", "c", "a"]
    assert await listed(client, reader, **{"from": "2024-05-02"}) == ["d", "c"]
    assert await listed(client, reader, to="2024-05-01") == ["b", "a"]
    assert await listed(client, reader, has_failures="true") == ["c", "b"]
    assert await listed(client, reader, has_failures="false", domain="example.com") == ["d", "a"]


async def test_list_pages(
    client: httpx.AsyncClient, reader: dict[str, str], ids: dict[str, int]
) -> None:
    seen: list[str] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if before is not None:
            params["before"] = before
        page = (await client.get("/v1/inbound/reports", params=params, headers=reader)).json()
        seen += [r["report_id"] for r in page["reports"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == ["d", "c", "b", "a"]


async def test_one_report_and_errors(
    client: httpx.AsyncClient, reader: dict[str, str], ids: dict[str, int], make_token: MakeToken
) -> None:
    detail = (await client.get(f"/v1/inbound/reports/{ids['b']}", headers=reader)).json()
    assert detail["report"] == orjson.loads(REPORTS["b"])
    assert detail["policy_domains"] == ["example.com", "mx1.example.com"]
    assert (detail["success_count"], detail["failure_count"], detail["has_failures"]) == (
        14,
        17,
        True,
    )
    missing = await client.get("/v1/inbound/reports/999999", headers=reader)
    assert missing.status_code == 404
    assert (await client.get(f"/v1/inbound/reports/{ids['b']}")).status_code == 401
    ingest_only = bearer(await make_token(Scope.INGEST))
    assert (await client.get("/v1/inbound/reports", headers=ingest_only)).status_code == 403
    bad = await client.get("/v1/inbound/reports", params={"domain": "bad domain"}, headers=reader)
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "domain"


async def test_summary_per_day_and_sender(
    client: httpx.AsyncClient, reader: dict[str, str], ids: dict[str, int]
) -> None:
    response = await client.get(
        "/v1/inbound/summary",
        params={"domain": "example.com", "from": "2024-05-01", "to": "2024-05-02"},
        headers=reader,
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["domain"], summary["from"], summary["to"]) == (
        "example.com",
        "2024-05-01",
        "2024-05-02",
    )
    assert summary["days"] == [
        {
            "day": "2024-05-01",
            "organization": "Google Inc.",
            "reports": 1,
            "successful_sessions": 40,
            "failed_sessions": 0,
            "failure_types": {},
            "mx_hosts": [],
            "sending_ips": [],
        },
        {
            "day": "2024-05-01",
            "organization": "Microsoft",
            "reports": 1,
            "successful_sessions": 10,
            "failed_sessions": 11,
            "failure_types": {
                "certificate-expired": 7,
                "starttls-not-supported": 3,
                "x-new-kind": 1,
            },
            "mx_hosts": [
                {
                    "mx_host": "mx1.example.com",
                    "receiving_ips": ["192.0.2.1", "192.0.2.2"],
                    "failed_sessions": 7,
                    "result_types": ["certificate-expired"],
                },
                {
                    "mx_host": "mx2.example.com",
                    "receiving_ips": ["192.0.2.3"],
                    "failed_sessions": 3,
                    "result_types": ["starttls-not-supported"],
                },
                {
                    "mx_host": None,
                    "receiving_ips": [],
                    "failed_sessions": 1,
                    "result_types": ["x-new-kind"],
                },
            ],
            "sending_ips": ["198.51.100.7"],
        },
    ]


async def test_summary_defaults_to_the_last_week_and_checks_range(
    client: httpx.AsyncClient, reader: dict[str, str], ids: dict[str, int], clock: FakeClock
) -> None:
    clock.set(clock.now.replace(year=2024, month=5, day=4))
    response = await client.get(
        "/v1/inbound/summary", params={"domain": "example.com"}, headers=reader
    )
    body = response.json()
    assert (body["from"], body["to"]) == ("2024-04-28", "2024-05-04")
    assert [(d["day"], d["organization"]) for d in body["days"]] == [
        ("2024-05-01", "Google Inc."),
        ("2024-05-01", "Microsoft"),
        ("2024-05-03", "Google Inc."),
    ]
    backwards = await client.get(
        "/v1/inbound/summary",
        params={"domain": "example.com", "from": "2024-05-04", "to": "2024-05-01"},
        headers=reader,
    )
    assert backwards.status_code == 422
    missing = await client.get("/v1/inbound/summary", headers=reader)
    assert missing.status_code == 422
