"""`tlsrpt doctor`: the relay as a delivery meets it (aiosmtpd with STARTTLS and AUTH, a
relay without STARTTLS, one that refuses AUTH, a closed port), the database, the DKIM key
and this service's own rua."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiosmtpd.smtp import SMTP
from pydantic import SecretStr

from app.config import DkimSettings, InboundSettings, SmtpSecurity, SmtpSettings
from app.db.migrate import expected_heads
from app.db.pool import open_pool
from app.delivery.smtp import (
    RELAY_CERTIFICATE_NOT_VERIFIED,
    RELAY_WITHOUT_AUTH,
    RELAY_WITHOUT_STARTTLS,
)
from app.dns.resolver import DnsResolver
from app.dnscheck.dkim import generate_key
from app.dnscheck.doctor import check_relay, run_doctor
from app.dnscheck.model import Status
from app.tokens.service import Scope, create_token
from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa
from tests.delivery.sinks import SmtpHandler, password_authenticator, smtp_sink
from tests.dnscheck.conftest import check_settings
from tests.dnscheck.zone_server import ZoneData, absolute, zone_server


def relay_settings(port: int, ca: LoopbackCa, **smtp: object) -> SmtpSettings:
    values: dict[str, object] = {
        "host": "localhost",
        "port": port,
        "security": SmtpSecurity.STARTTLS,
        "ca_file": ca.ca_file,
        "timeout_seconds": 5.0,
    }
    values.update(smtp)
    return SmtpSettings.model_validate(values)


async def test_relay_checks_say_what_is_wrong(mx_ca: LoopbackCa) -> None:
    handler = SmtpHandler()
    auth = password_authenticator("reporter", "s3cret-pw")
    good = {"username": "reporter", "password": SecretStr("s3cret-pw")}
    async with smtp_sink(handler, tls_context=mx_ca.server_context(), authenticator=auth) as port:
        ok = await check_relay(check_settings(1, mx_ca, smtp=relay_settings(port, mx_ca, **good)))
        untrusted = await check_relay(
            check_settings(1, mx_ca, smtp=relay_settings(port, mx_ca, ca_file=None, **good))
        )
        wrong = {"username": "reporter", "password": SecretStr("wrong-pw")}
        refused = await check_relay(
            check_settings(1, mx_ca, smtp=relay_settings(port, mx_ca, **wrong))
        )
    assert ok.status is Status.OK
    assert ok.message == (
        f"relay: connected to localhost:{port} (starttls), EHLO accepted, TLS certificate "
        "verified, AUTH accepted for reporter."
    )
    assert untrusted.message.startswith(RELAY_CERTIFICATE_NOT_VERIFIED)
    assert refused.status is Status.FAIL
    assert refused.message.startswith("relay refused our credentials (5.7.8")
    assert "wrong-pw" not in refused.message
    assert handler.messages == []  # nothing was sent

    async with smtp_sink(SmtpHandler()) as plain:  # offers no STARTTLS
        no_tls = await check_relay(check_settings(1, mx_ca, smtp=relay_settings(plain, mx_ca)))
    assert no_tls.status is Status.FAIL
    assert no_tls.message == RELAY_WITHOUT_STARTTLS + "."
    assert "unreachable" not in no_tls.message

    # A relay that offers no AUTH mechanism while a username is configured.
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            SmtpHandler(),
            hostname="noauth.test",
            tls_context=mx_ca.server_context(),
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
        ),
        "127.0.0.1",
        0,
    )
    try:
        no_auth = server.sockets[0].getsockname()[1]
        without_auth = await check_relay(
            check_settings(1, mx_ca, smtp=relay_settings(no_auth, mx_ca, **good))
        )
    finally:
        server.close()
        await server.wait_closed()
    assert without_auth.message == RELAY_WITHOUT_AUTH + "."

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening
        down = await check_relay(check_settings(1, mx_ca, smtp=relay_settings(closed, mx_ca)))
    assert down.status is Status.FAIL
    assert down.message.startswith("relay unreachable (SMTPConnectError")
    assert "Connect call failed" in down.message


async def test_doctor_end_to_end(database_url: str, mx_ca: LoopbackCa, tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    line = generate_key("sender.test", "tlsrpt1", key)
    value = line.split(" IN TXT ", 1)[1]
    pool = await open_pool(database_url, check_settings(1, mx_ca).database)
    try:
        token = await create_token(pool, "rua", [Scope.INBOUND], clock=FakeClock())
    finally:
        await pool.close()
    ours = f"https://tlsrpt.reports.test/v1/tlsrpt/{token}"
    records = {
        ("tlsrpt1._domainkey.sender.test", "TXT"): [value],
        ("tlsrpt.reports.test", "A"): ["93.184.215.14"],
        ("_smtp._tls.mine.test", "TXT"): [f'"v=TLSRPTv1; rua={ours}"'],
        ("_smtp._tls.other.test", "TXT"): ['"v=TLSRPTv1; rua=https://tlsrpt.reports.test/x"'],
    }
    zone = ZoneData(absolute(records))
    async with smtp_sink(SmtpHandler(), tls_context=mx_ca.server_context()) as port:
        with zone_server(zone) as dns_port:
            settings = check_settings(
                dns_port,
                mx_ca,
                smtp=relay_settings(port, mx_ca),
                dkim=DkimSettings(selector="tlsrpt1", private_key_file=key),
                inbound=InboundSettings(rua_token=SecretStr(token)),
            )
            result = await run_doctor(
                settings,
                database_url=database_url,
                expected_heads=expected_heads(),
                resolver=DnsResolver(settings.dns),
                domains=["mine.test", "other.test"],
            )
            assert [(f.subject, f.status) for f in result.findings] == [
                ("database", Status.OK),
                ("TLSRPT_SEND_REPORTS", Status.OK),
                ("TLSRPT_SMTP__HOST", Status.OK),
                ("tlsrpt1._domainkey.sender.test", Status.OK),
                ("TLSRPT_MAIL__FROM", Status.OK),
                ("TLSRPT_INBOUND__RUA_TOKEN", Status.OK),
                ("_smtp._tls.mine.test", Status.OK),
                ("_smtp._tls.other.test", Status.OK),
                ("_smtp._tls.other.test", Status.WARN),
            ]
            assert "(this service)" in result.findings[6].message
            assert "sends no reports to this service" in result.findings[8].message
            assert result.status is Status.WARN

            unknown_token = settings.model_copy(
                update={"inbound": InboundSettings(rua_token=SecretStr("not-a-token"))}
            )
            result = await run_doctor(
                unknown_token,
                database_url=database_url,
                expected_heads=frozenset({"some-later-revision"}),
                resolver=DnsResolver(settings.dns),
            )
    findings = {f.subject: f for f in result.findings}
    assert "not at the expected revision" in findings["database"].message
    assert "not an active token" in findings["TLSRPT_INBOUND__RUA_TOKEN"].message
    assert result.status is Status.FAIL


async def test_doctor_with_the_database_away(mx_ca: LoopbackCa) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        settings = check_settings(1, mx_ca, smtp=relay_settings(closed, mx_ca))
        settings.database.connect_timeout_seconds = 1.0
        result = await run_doctor(
            settings,
            database_url=f"postgresql://postgres@127.0.0.1:{closed}/none",
            expected_heads=expected_heads(),
            resolver=DnsResolver(settings.dns),
        )
    findings = {f.subject: f for f in result.findings}
    assert findings["database"].status is Status.FAIL
    assert findings["database"].message.startswith("unreachable")
    assert findings["TLSRPT_INBOUND__RUA_TOKEN"].status is Status.UNKNOWN
