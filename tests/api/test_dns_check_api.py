"""`GET /v1/dns/check` (scope read) against a loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.config import DnsSettings
from app.dns.resolver import DnsResolver
from app.resources import Resources
from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer
from tests.dnscheck.zone_server import ZoneData, absolute, zone_server

ZONE = {
    ("mail.test", "MX"): ["10 mx.mail.test."],
    ("mx.mail.test", "A"): ["93.184.215.14"],
    ("_smtp._tls.mail.test", "TXT"): ['"v=TLSRPTv1; rua=mailto:tlsrpt@mail.test"'],
}


@pytest.fixture
def dns_port(resources: Resources) -> Iterator[int]:
    with zone_server(ZoneData(absolute(ZONE))) as port:
        resources.dns_check_resolver = DnsResolver(
            DnsSettings(nameservers=[f"127.0.0.1:{port}"], timeout_seconds=1)
        )
        yield port


async def test_check_over_http(
    client: httpx.AsyncClient, make_token: MakeToken, dns_port: int
) -> None:
    token = await make_token(Scope.READ)
    response = await client.get(
        "/v1/dns/check", params={"domain": ["mail.test", "none.test"]}, headers=bearer(token)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "fail"  # none.test has nothing
    mail, none = body["domains"]
    assert mail["resolver"] == [f"127.0.0.1:{dns_port}"]
    assert mail["mx_hosts"][0]["host"] == "mx.mail.test"
    assert mail["tlsrpt"]["rua"] == ["mailto:tlsrpt@mail.test"]
    assert {f["status"] for f in mail["tlsrpt"]["findings"]} == {"ok"}
    assert mail["mta_sts"]["findings"][0]["status"] == "warn"  # neither MTA-STS nor DANE
    assert none["tlsrpt"]["findings"][0]["message"].startswith("no TLSRPT record")


async def test_scope_and_bad_domains(
    client: httpx.AsyncClient, make_token: MakeToken, dns_port: int
) -> None:
    assert (await client.get("/v1/dns/check", params={"domain": "mail.test"})).status_code == 401
    ingest = await make_token(Scope.INGEST)
    forbidden = await client.get(
        "/v1/dns/check", params={"domain": "mail.test"}, headers=bearer(ingest)
    )
    assert forbidden.status_code == 403
    read = await make_token(Scope.READ)
    bad = await client.get(
        "/v1/dns/check", params={"domain": ["mail.test", "a..b"]}, headers=bearer(read)
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"] == [
        {"index": 1, "field": "domain", "reason": "invalid label '' in domain name"}
    ]
    missing = await client.get("/v1/dns/check", headers=bearer(read))
    assert missing.status_code == 422
    # The schema's maxItems, enforced: 21 domains are refused before any lookup.
    many = [f"d{i}.test" for i in range(21)]
    too_many = await client.get("/v1/dns/check", params={"domain": many}, headers=bearer(read))
    assert too_many.status_code == 422
    assert "domain" in str(too_many.json()["error"]["details"])
