"""DnsResolver against a real DNS server on 127.0.0.1 (a tiny UDP server in the test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
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

ZONE: dict[tuple[str, str], list[str]] = {
    ("_smtp._tls.good.example.", "TXT"): [
        '"v=TLSRPTv1; rua=mailto:tls" "rpt@good.example,https://r.good.example/x"',
        '"v=spf1 -all"',
    ],
    ("_smtp._tls.two.example.", "TXT"): [
        '"v=TLSRPTv1; rua=mailto:a@two.example"',
        '"v=TLSRPTv1; rua=mailto:b@two.example"',
    ],
    ("rua.example.", "A"): ["192.0.2.7"],
    ("rua.example.", "AAAA"): ["2001:db8::7"],
}


@dataclass
class LoopbackDns(asyncio.DatagramProtocol):
    """Answers from ZONE; `servfail.` names get SERVFAIL, `silent.` names nothing."""

    delay: float = 0.0
    queries: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    transport: asyncio.DatagramTransport | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append(f"{name} {rdtype}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if name.startswith("_smtp._tls.silent."):
            return
        response = dns.message.make_response(query)
        if name.startswith("_smtp._tls.servfail."):
            response.set_rcode(dns.rcode.SERVFAIL)
        elif (name, rdtype) in ZONE:
            response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *ZONE[name, rdtype]))
        elif name.startswith("_smtp._tls.nodata.") or name == "rua.example.":
            pass  # NOERROR, empty answer
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def server() -> AsyncIterator[tuple[LoopbackDns, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        LoopbackDns, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        yield protocol, port
    finally:
        transport.close()
        for task in list(protocol.tasks):
            task.cancel()


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
