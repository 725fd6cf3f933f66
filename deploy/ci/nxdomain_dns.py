"""A DNS server on 127.0.0.1 that answers every question with NXDOMAIN (CI only).

deploy/ci/schemathesis.sh points the service under test at it, so the DNS check and
report previews get a quick, definite answer and no question leaves the machine.
Prints its port on the first line of stdout, then serves until killed.
"""

from __future__ import annotations

import socket
import sys

import dns.exception
import dns.message
import dns.rcode


def main() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            continue  # not a DNS message: ignored
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), peer)


if __name__ == "__main__":
    sys.exit(main())
