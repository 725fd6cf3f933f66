"""Fixtures of the DNS check tests: a test CA for the MX and MTA-STS names, an MTA-STS
policy server (HTTPS, uvicorn on loopback), settings aimed at a loopback zone server."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr

from app.config import DnsSettings, HttpsSettings, InboundSettings, ReportSettings, Settings
from tests.delivery.certs import LoopbackCa, make_test_ca
from tests.delivery.sinks import https_receiver

MX_NAMES = (
    "localhost",
    "mx1.good.test",
    "mx2.good.test",
    "mx.bad.test",
    "mta-sts.good.test",
    "mta-sts.bad.test",
    "mta-sts.redirect.test",
    "mta-sts.html.test",
    "mta-sts.big.test",
)


@pytest.fixture(scope="session")
def mx_ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCa:
    """A CA whose server certificate names the test MX and MTA-STS hosts, valid 90 days."""
    return make_test_ca(Path(tmp_path_factory.mktemp("mxca")), MX_NAMES, valid_days=90)


def spki_sha256(ca: LoopbackCa) -> str:
    """The `3 1 1` TLSA data of the CA's server certificate."""
    cert = x509.load_pem_x509_certificate(ca.cert_file.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


GOOD_POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: *.good.test\r\nmax_age: 604800\r\n"


@dataclass
class PolicyServer:
    """Serves `/.well-known/mta-sts.txt` per Host: (status, content type, body, location)."""

    policies: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        host = headers.get("host", "").rsplit(":", 1)[0]
        self.requests.append(f"{scope['method']} {host}{scope['path']}")
        status, media, body = self.policies.get(host, (404, "text/plain", b"no policy"))
        extra = [(b"location", b"https://elsewhere.test/")] if 300 <= status < 400 else []
        if scope["path"] != "/.well-known/mta-sts.txt":
            status, body = 404, b"not here"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", media.encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def policy_server(mx_ca: LoopbackCa) -> AsyncIterator[tuple[PolicyServer, int]]:
    app = PolicyServer({"mta-sts.good.test": (200, "text/plain; charset=utf-8", GOOD_POLICY)})
    async with https_receiver(app, str(mx_ca.cert_file), str(mx_ca.key_file)) as port:  # type: ignore[arg-type]
        yield app, port


def check_settings(dns_port: int, ca: LoopbackCa, **overrides: Any) -> Settings:
    """Settings for a check against the loopback zone: loopback allowed past the SSRF
    guard (the test servers live there), the test CA trusted, this service's rua set."""
    values: dict[str, Any] = {
        "database_url": SecretStr("postgresql://unused/"),
        "dns": DnsSettings(nameservers=[f"127.0.0.1:{dns_port}"], timeout_seconds=0.5),
        "https": HttpsSettings(
            allowed_networks=[ipaddress.ip_network("127.0.0.0/8")], ca_file=ca.ca_file
        ),
        "inbound": InboundSettings(
            rua_address="tlsrpt@reports.test", rua_token=SecretStr("tok123")
        ),
        "public_url": "https://tlsrpt.reports.test",
        "report": ReportSettings(contact_info="tlsrpt@sender.test"),
    }
    values.update(overrides)
    return Settings(**values)
