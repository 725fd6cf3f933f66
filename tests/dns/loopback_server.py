"""A tiny DNS server on 127.0.0.1 for tests: real UDP, answers from ZONE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

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


@asynccontextmanager
async def loopback_dns() -> AsyncIterator[tuple[LoopbackDns, int]]:
    """Run the server on a free port for the duration of the block."""
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
