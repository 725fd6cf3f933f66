"""A DNS server on 127.0.0.1 serving test zones, standing in for a validating resolver.

Real UDP, in a thread (so both async tests and the CLI's own event loop can use it).
It answers like a recursive resolver would: CNAMEs are followed within the answer (a
loop is served as the chain it is, up to 16 links), and the AD bit is set on answers for
names listed as `secure`, when the query asked for it (RFC 6840 §5.7): the stand-in for a
validating resolver checking signed zones, which is what the AD bit means to a stub.
Names under `servfail.` get SERVFAIL, under `lame.` REFUSED (a lame server), under
`silent.` nothing at all (a timeout). `queries` records "name TYPE" of each question.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

Zone = dict[tuple[str, str], list[str]]


@dataclass
class ZoneData:
    records: Zone
    secure: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append(f"{name} {rdtype}")
        labels = name.split(".")
        if "silent" in labels:
            return None
        response = dns.message.make_response(query)
        if "servfail" in labels:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if "lame" in labels:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        current, secure = name, True
        for _ in range(16):
            secure = secure and current in self.secure
            if (current, rdtype) in self.records:
                response.answer.append(
                    dns.rrset.from_text(current, 60, "IN", rdtype, *self.records[current, rdtype])
                )
                break
            target = self.records.get((current, "CNAME"))
            if target is None:
                if not any(key[0] == current for key in self.records):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            response.answer.append(dns.rrset.from_text(current, 60, "IN", "CNAME", *target))
            current = target[0].lower()
        if secure and query.flags & dns.flags.AD:
            # What a validating resolver says of an answer from a signed zone.
            response.flags |= dns.flags.AD
        return response


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        zone: ZoneData = self.server.zone  # type: ignore[attr-defined]
        response = zone.answer(dns.message.from_wire(data))
        if response is not None:
            sock.sendto(response.to_wire(), self.client_address)


@contextmanager
def zone_server(zone: ZoneData) -> Iterator[int]:
    """Serve `zone` on 127.0.0.1 for the duration of the block; yields the port."""
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.zone = zone  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def absolute(zone: dict[tuple[str, str], list[str]]) -> Zone:
    """Zone keys as absolute lower-case names (`a.test` -> `a.test.`)."""
    return {
        (name.lower().rstrip(".") + ".", rdtype): values for (name, rdtype), values in zone.items()
    }
