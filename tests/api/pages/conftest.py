"""The page tests' loopback DNS zone (`checked`): the DNS page's resolver aimed at it,
and settings whose DKIM key is not the one the zone publishes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import DkimSettings, DnsSettings, InboundSettings, ReportSettings
from app.dns.resolver import DnsResolver
from app.dnscheck.dkim import format_dkim_record, public_key_der
from app.resources import Resources
from tests.delivery.certs import make_dkim_key_pair
from tests.delivery.conftest import dkim_pair  # noqa: F401  (fixture)
from tests.dnscheck.zone_server import ZoneData, absolute, zone_server


def dns_zone(other_dkim_pem: bytes) -> ZoneData:
    line = format_dkim_record("sel", "sender.example", public_key_der(other_dkim_pem))
    return ZoneData(
        absolute(
            {
                ("good.test", "MX"): ["10 mx.good.test."],
                # Loopback addresses only: `probe` connects to public ones.
                ("mx.good.test", "A"): ["127.0.0.1"],
                ("reports.test", "MX"): ["10 mx.reports.test."],
                ("_smtp._tls.good.test", "TXT"): ['"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"'],
                ("bad.test", "MX"): ["10 mx.bad.test."],
                ("mx.bad.test", "A"): ["127.0.0.1"],
                ("_smtp._tls.bad.test", "TXT"): ['"v=TLSRPTv1; rua=ftp://nope"'],
                ("_smtp._tls.servfail.test", "TXT"): ['"v=TLSRPTv1; rua=mailto:a@b.test"'],
                ("sel._domainkey.sender.example", "TXT"): [line.split(" IN TXT ", 1)[1]],
            }
        )
    )


@pytest.fixture
def checked(
    resources: Resources,
    tmp_path: Path,
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> Iterator[ZoneData]:
    """The page's resolver aimed at the zone; this service signs with `dkim_pair`, while
    DNS publishes another key."""
    zone = dns_zone(make_dkim_key_pair()[0])
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_pair[0])
    resources.settings = resources.settings.model_copy(
        update={
            "report": ReportSettings(contact_info="tlsrpt@sender.example"),
            "dkim": DkimSettings(selector="sel", private_key_file=key_file),
            "inbound": InboundSettings(rua_address="tlsrpt@reports.test"),
        }
    )
    with zone_server(zone) as port:
        resources.dns_check_resolver = DnsResolver(
            DnsSettings(nameservers=[f"127.0.0.1:{port}"], timeout_seconds=0.5)
        )
        yield zone
