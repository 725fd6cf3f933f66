"""Reports API: ingest over HTTP, preview, build, list, fetch and download."""

from __future__ import annotations

import gzip
from datetime import date
from typing import Any

import httpx
import orjson
import pytest

from app.delivery.suppression import add_suppression
from app.dns.lookup import TemporaryDnsError
from app.resources import Resources
from app.tokens.service import Scope
from tests import services
from tests.conftest import MakeToken, bearer
from tests.dns.fake_resolver import FakeResolver

DAY = date(2026, 11, 23)


def result(domain: str, result_type: str = "success", **extra: Any) -> dict[str, Any]:
    return {
        "policy": {
            "policy-type": "sts",
            "policy-domain": domain,
            "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{domain}"],
            "mx-host": [f"mx.{domain}"],
        },
        "result-type": result_type,
        "timestamp": "2026-11-23T10:00:00Z",
        **extra,
    }


@pytest.fixture
async def headers(make_token: MakeToken) -> dict[str, str]:
    return bearer(await make_token(Scope.READ))


@pytest.fixture
async def dns(
    resources: Resources, client: httpx.AsyncClient, make_token: MakeToken
) -> FakeResolver:
    """A fake resolver, and a day of results posted over HTTP."""
    resolver = FakeResolver()
    resources.resolver = resolver
    resolver.publish("example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://r.example/")
    resolver.publish("xn--bcher-kva.example", "v=TLSRPTv1; rua=mailto:rpt@bücher.example")
    resolver.publish("http.example", "v=TLSRPTv1; rua=http://r.http.example/")
    resolver.fail("flaky.example", TemporaryDnsError("_smtp._tls.flaky.example: timed out"))
    body = {
        "results": [
            result("example.com", count=7),
            result("example.com", "starttls-not-supported", **{"receiving-ip": "192.0.2.9"}),
            result("Bücher.example", count=2),
            result("http.example"),
            result("norecord.example"),
            result("flaky.example"),
        ]
    }
    ingest = bearer(await make_token(Scope.INGEST))
    response = await client.post("/v1/results", json=body, headers=ingest)
    assert response.status_code == 200, response.text
    return resolver


async def test_preview_is_what_gets_built_and_sent(
    client: httpx.AsyncClient, headers: dict[str, str], dns: FakeResolver, resources: Resources
) -> None:
    params = {"policy_domain": "example.com", "day": DAY.isoformat()}
    before = await client.get("/v1/reports/preview", params=params, headers=headers)
    assert before.status_code == 200, before.text
    assert before.headers["content-type"] == "application/json"
    assert before.headers["x-report-stored"] == "false"
    document = orjson.loads(before.content)
    assert document["policies"][0]["summary"] == {
        "total-successful-session-count": 7,
        "total-failure-session-count": 1,
    }
    await services.build_day(resources, DAY)
    after = await client.get("/v1/reports/preview", params=params, headers=headers)
    assert after.headers["x-report-stored"] == "true"
    assert after.content == before.content

    idna = await client.get(
        "/v1/reports/preview",
        params={"policy_domain": "BÜCHER.example", "day": DAY.isoformat()},
        headers=headers,
    )
    assert idna.status_code == 200
    assert orjson.loads(idna.content)["policies"][0]["policy"]["policy-domain"] == (
        "xn--bcher-kva.example"
    )


@pytest.mark.parametrize(
    ("domain", "reason"),
    [
        ("norecord.example", "no_record"),
        ("http.example", "no_usable_rua"),
        ("nothing.example", "no_results"),
    ],
)
async def test_preview_404_names_the_reason(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    dns: FakeResolver,
    domain: str,
    reason: str,
) -> None:
    response = await client.get(
        "/v1/reports/preview",
        params={"policy_domain": domain, "day": DAY.isoformat()},
        headers=headers,
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "no_report"
    assert error["details"][0] == {"field": "reason", "reason": reason}
    assert reason in error["message"]


async def test_preview_errors(
    client: httpx.AsyncClient, headers: dict[str, str], dns: FakeResolver, make_token: MakeToken
) -> None:
    day = DAY.isoformat()
    flaky = await client.get(
        "/v1/reports/preview",
        params={"policy_domain": "flaky.example", "day": day},
        headers=headers,
    )
    assert flaky.status_code == 503
    assert flaky.json()["error"]["code"] == "dns_temporary_failure"
    bad = await client.get(
        "/v1/reports/preview", params={"policy_domain": "a..b", "day": day}, headers=headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "query.policy_domain"
    bad_day = await client.get(
        "/v1/reports/preview",
        params={"policy_domain": "example.com", "day": "yesterday"},
        headers=headers,
    )
    assert bad_day.status_code == 422
    anonymous = await client.get(
        "/v1/reports/preview", params={"policy_domain": "example.com", "day": day}
    )
    assert anonymous.status_code == 401
    ingest_only = bearer(await make_token(Scope.INGEST))
    forbidden = await client.get("/v1/reports", params={"day": day}, headers=ingest_only)
    assert forbidden.status_code == 403


async def test_list_get_and_download(
    client: httpx.AsyncClient, headers: dict[str, str], dns: FakeResolver, resources: Resources
) -> None:
    before = await client.get("/v1/reports", params={"day": DAY.isoformat()}, headers=headers)
    assert before.json()["reports"] == []
    assert [(d["policy_domain"], d["state"]) for d in before.json()["domains"]] == [
        ("example.com", "not_built"),
        ("flaky.example", "not_built"),
        ("http.example", "not_built"),
        ("norecord.example", "not_built"),
        ("xn--bcher-kva.example", "not_built"),
    ]
    await services.build_day(resources, DAY)
    listing = await client.get("/v1/reports", params={"day": DAY.isoformat()}, headers=headers)
    assert listing.status_code == 200
    body = listing.json()
    assert [r["policy_domain"] for r in body["reports"]] == [
        "example.com",
        "xn--bcher-kva.example",
    ]
    first = body["reports"][0]
    assert first["rua"] == ["mailto:tlsrpt@example.com", "https://r.example/"]
    assert first["state"] == "built"
    assert [(d["rua"], d["kind"], d["state"]) for d in first["deliveries"]] == [
        ("mailto:tlsrpt@example.com", "mailto", "pending"),
        ("https://r.example/", "https", "pending"),
    ]
    assert body["reports"][1]["rua"] == ["mailto:rpt@xn--bcher-kva.example"]
    domains = {d["policy_domain"]: (d["state"], d["reason"]) for d in body["domains"]}
    assert domains["norecord.example"] == ("no_report", "no_record")
    assert domains["http.example"] == ("no_report", "no_usable_rua")
    assert domains["flaky.example"][0] == "pending"
    assert domains["flaky.example"][1].startswith("dns_temporary_failure: ")
    http_detail = next(d for d in body["domains"] if d["policy_domain"] == "http.example")
    assert "http://r.http.example/" in http_detail["detail"]

    report = await client.get(f"/v1/reports/{first['id']}", headers=headers)
    assert report.status_code == 200
    assert orjson.loads(report.content)["report-id"] == first["report_id"]
    download = await client.get(f"/v1/reports/{first['id']}/download", headers=headers)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/tlsrpt+gzip"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{first["filename"]}"'
    )
    assert first["filename"].startswith("localhost!example.com!1795392000!1795478399!")
    assert gzip.decompress(download.content) == report.content
    missing = await client.get("/v1/reports/999999", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    empty = await client.get("/v1/reports", params={"day": "2026-01-01"}, headers=headers)
    assert empty.json() == {"day": "2026-01-01", "reports": [], "domains": []}


async def test_unusable_and_suppressed_rua_named_with_the_reason(
    client: httpx.AsyncClient, headers: dict[str, str], dns: FakeResolver, resources: Resources
) -> None:
    # One usable rua, one of another scheme, one unparseable address, one suppressed.
    dns.publish(
        "example.com",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,ftp://r.example/x,mailto:a..b@example.com,"
        "https://r.example/",
    )
    await add_suppression(
        resources.pool, resources.clock, "https://r.example/", comment="gone", expires_at=None
    )
    params = {"policy_domain": "example.com", "day": DAY.isoformat()}
    unusable = [
        {"rua": "ftp://r.example/x", "reason": "scheme 'ftp' is not mailto or https"},
        {"rua": "mailto:a..b@example.com", "reason": "invalid address 'a..b@example.com'"},
    ]
    suppressed = {"rua": "https://r.example/", "reason": "suppressed: gone"}
    for built in (False, True):
        if built:
            await services.build_day(resources, DAY)
        preview = await client.get("/v1/reports/preview", params=params, headers=headers)
        assert preview.status_code == 200
        assert preview.headers["x-report-stored"] == str(built).lower()
        assert orjson.loads(preview.headers["x-report-rua-not-used"]) == [*unusable, suppressed]
    listing = await client.get("/v1/reports", params={"day": DAY.isoformat()}, headers=headers)
    (report,) = [r for r in listing.json()["reports"] if r["policy_domain"] == "example.com"]
    assert report["rua"] == ["mailto:tlsrpt@example.com", "https://r.example/"]
    assert report["rua_not_used"] == unusable
