"""DnsResolver against a real DNS server on 127.0.0.1 (a tiny UDP server in the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.config import DnsSettings
from app.dns.lookup import (
    MultipleRecordsError,
    NoRecordError,
    TemporaryDnsError,
    lookup_many,
    lookup_tlsrpt,
)
from app.dns.resolver import DnsResolver
from app.tlsrpt.record import TlsrptRecord
from tests.dns.loopback_server import LoopbackDns, loopback_dns


@pytest.fixture
async def server() -> AsyncIterator[tuple[LoopbackDns, int]]:
    async with loopback_dns() as running:
        yield running


def make_resolver(port: int, now: list[float] | None = None, **settings: object) -> DnsResolver:
    values: dict[str, object] = {"nameservers": [f"127.0.0.1:{port}"], "timeout_seconds": 2.0}
    values.update(settings)
    clock = now or [0.0]
    return DnsResolver(DnsSettings.model_validate(values), monotonic=lambda: clock[0])


async def test_outcomes_over_real_udp(server: tuple[LoopbackDns, int]) -> None:
    _, port = server
    resolver = make_resolver(port)
    record = await lookup_tlsrpt(resolver, "good.example")
    assert [u.uri for u in record.usable_rua] == [
        "mailto:tlsrpt@good.example",
        "https://r.good.example/x",
    ]
    with pytest.raises(MultipleRecordsError):
        await lookup_tlsrpt(resolver, "two.example")
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "missing.example")  # NXDOMAIN
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "nodata.example")
    with pytest.raises(TemporaryDnsError, match="no nameserver answered"):
        await lookup_tlsrpt(resolver, "servfail.example")
    assert await resolver.resolve_addresses("rua.example") == ["192.0.2.7", "2001:db8::7"]


async def test_timeout_is_temporary(server: tuple[LoopbackDns, int]) -> None:
    _, port = server
    resolver = make_resolver(port, timeout_seconds=0.2)
    with pytest.raises(TemporaryDnsError, match="timed out"):
        await lookup_tlsrpt(resolver, "silent.example")


async def test_cache_is_capped_by_cache_seconds(server: tuple[LoopbackDns, int]) -> None:
    protocol, port = server
    now = [100.0]
    resolver = make_resolver(port, now, cache_seconds=30)
    await lookup_tlsrpt(resolver, "good.example")
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "missing.example")
    await lookup_tlsrpt(resolver, "good.example")
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "missing.example")
    assert len(protocol.queries) == 2  # both answered from the cache the second time
    now[0] += 31  # TTL is 60, cache_seconds 30 wins
    await lookup_tlsrpt(resolver, "good.example")
    assert len(protocol.queries) == 3
    with pytest.raises(TemporaryDnsError):
        await lookup_tlsrpt(resolver, "servfail.example")
    with pytest.raises(TemporaryDnsError):
        await lookup_tlsrpt(resolver, "servfail.example")  # failures are never cached
    assert protocol.queries.count("_smtp._tls.servfail.example. TXT") >= 2


async def test_concurrency_is_limited(server: tuple[LoopbackDns, int]) -> None:
    protocol, port = server
    protocol.delay = 0.02
    resolver = make_resolver(port, max_concurrency=3, cache_seconds=0)
    domains = [f"d{i}.example" for i in range(12)] + ["good.example"]
    outcomes = await lookup_many(resolver, domains)
    assert isinstance(outcomes["good.example"], TlsrptRecord)
    assert sum(isinstance(o, NoRecordError) for o in outcomes.values()) == 12
    assert len(protocol.queries) == 13
    assert protocol.max_in_flight == 3
