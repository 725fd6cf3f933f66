"""The SMTP relay adapter against aiosmtpd on 127.0.0.1: replies, TLS, AUTH, timeouts."""

from __future__ import annotations

import asyncio
import socket

import pytest
from pydantic import SecretStr

from app.config import SmtpSecurity, SmtpSettings
from app.delivery.errors import PermanentDeliveryError, TemporaryDeliveryError
from app.delivery.smtp import RELAY_CERTIFICATE_NOT_VERIFIED, RELAY_WITHOUT_STARTTLS, SmtpRelay
from tests.delivery.certs import LoopbackCa
from tests.delivery.sinks import SmtpHandler, password_authenticator, smtp_sink
from tests.wait import until

MESSAGE = b"From: a@sender.example\r\nTo: r@example.com\r\nSubject: t\r\n\r\nbody\r\n"


def relay(port: int, **settings: object) -> SmtpRelay:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": SmtpSecurity.NONE,
        "timeout_seconds": 5.0,
    }
    values.update(settings)
    return SmtpRelay(SmtpSettings(**values), helo_name="sender.example")  # type: ignore[arg-type]


async def test_accepted_message_arrives_unchanged() -> None:
    handler = SmtpHandler()
    async with smtp_sink(handler) as port:
        receipt = await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
    assert receipt.code == 250
    assert "queued as TEST" in receipt.excerpt
    [mail] = handler.messages
    assert mail.mail_from == "a@sender.example"
    assert mail.rcpt_tos == ["r@example.com"]
    assert mail.content == MESSAGE
    assert not mail.tls


async def test_451_is_temporary_and_550_permanent() -> None:
    handler = SmtpHandler(rcpt_replies=["451 4.3.0 Try again later", "550 5.1.1 No such user"])
    async with smtp_sink(handler) as port:
        with pytest.raises(TemporaryDeliveryError) as temporary:
            await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
        with pytest.raises(PermanentDeliveryError) as permanent:
            await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
        await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
    assert temporary.value.code == 451
    assert temporary.value.excerpt == "451 4.3.0 Try again later"
    assert permanent.value.code == 550
    assert permanent.value.excerpt == "550 5.1.1 No such user"
    assert len(handler.messages) == 1


async def test_data_replies_are_classified() -> None:
    handler = SmtpHandler(data_replies=["452 4.3.1 Insufficient storage", "554 5.6.0 Rejected"])
    async with smtp_sink(handler) as port:
        with pytest.raises(TemporaryDeliveryError) as temporary:
            await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
        with pytest.raises(PermanentDeliveryError) as permanent:
            await relay(port).send("a@sender.example", "r@example.com", MESSAGE)
    assert temporary.value.code == 452
    assert permanent.value.code == 554
    assert handler.messages == []


async def test_connection_refused_is_temporary() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(TemporaryDeliveryError, match="relay unreachable"):
            await relay(port).send("a@sender.example", "r@example.com", MESSAGE)


async def test_silent_server_times_out_as_temporary() -> None:
    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TemporaryDeliveryError, match="timed out"):
            await relay(port, timeout_seconds=0.2).send("a@x.example", "r@example.com", MESSAGE)
    finally:
        server.close()
        await server.wait_closed()


async def test_starttls_with_auth(test_ca: LoopbackCa) -> None:
    handler = SmtpHandler()
    async with smtp_sink(
        handler,
        tls_context=test_ca.server_context(),
        authenticator=password_authenticator("reporter", "s3cret-pw"),
    ) as port:
        settings = {
            "host": "localhost",
            "security": SmtpSecurity.STARTTLS,
            "ca_file": test_ca.ca_file,
            "username": "reporter",
        }
        await relay(port, **settings, password=SecretStr("s3cret-pw")).send(
            "a@sender.example", "r@example.com", MESSAGE
        )
        with pytest.raises(TemporaryDeliveryError, match="credentials") as refused:
            await relay(port, **settings, password=SecretStr("wrong-pw")).send(
                "a@sender.example", "r@example.com", MESSAGE
            )
    [mail] = handler.messages
    assert mail.tls and mail.authenticated
    assert refused.value.code == 535
    assert "wrong-pw" not in f"{refused.value} {refused.value.excerpt}"


async def test_starttls_requires_a_trusted_certificate(test_ca: LoopbackCa) -> None:
    handler = SmtpHandler()
    async with smtp_sink(handler, tls_context=test_ca.server_context()) as port:
        with pytest.raises(TemporaryDeliveryError) as untrusted:
            await relay(port, host="localhost", security=SmtpSecurity.STARTTLS).send(
                "a@sender.example", "r@example.com", MESSAGE
            )
    assert untrusted.value.reason == RELAY_CERTIFICATE_NOT_VERIFIED
    assert "unable to get local issuer certificate" in untrusted.value.excerpt
    assert handler.messages == []


async def test_starttls_is_never_downgraded() -> None:
    handler = SmtpHandler()
    async with smtp_sink(handler) as port:  # offers no STARTTLS
        with pytest.raises(TemporaryDeliveryError) as refused:
            await relay(port, security=SmtpSecurity.STARTTLS).send(
                "a@sender.example", "r@example.com", MESSAGE
            )
    # Said as it is, naming the setting, not as "relay unreachable".
    assert refused.value.reason == RELAY_WITHOUT_STARTTLS
    assert "TLSRPT_SMTP__SECURITY" in refused.value.reason
    assert handler.messages == []


async def test_implicit_tls(test_ca: LoopbackCa) -> None:
    handler = SmtpHandler()
    async with smtp_sink(handler, tls_context=test_ca.server_context(), implicit_tls=True) as port:
        await relay(
            port, host="localhost", security=SmtpSecurity.TLS, ca_file=test_ca.ca_file
        ).send("a@sender.example", "r@example.com", MESSAGE)
    [mail] = handler.messages
    assert mail.tls


async def test_connections_are_reused_and_dropped_after_failures() -> None:
    handler = SmtpHandler()
    now = [0.0]
    async with smtp_sink(handler) as port:
        settings = SmtpSettings(host="127.0.0.1", port=port, security=SmtpSecurity.NONE)
        shared = SmtpRelay(settings, helo_name="sender.example", monotonic=lambda: now[0])
        for _ in range(3):
            await shared.send("a@sender.example", "r@example.com", MESSAGE)
        handler.rcpt_replies.append("550 5.1.1 No such user")
        with pytest.raises(PermanentDeliveryError):
            await shared.send("a@sender.example", "r@example.com", MESSAGE)
        await shared.send("a@sender.example", "r@example.com", MESSAGE)
        now[0] += 60  # idle longer than a relay keeps a client: a new connection
        await shared.send("a@sender.example", "r@example.com", MESSAGE)
        await shared.aclose()
    peers = [m.peer for m in handler.messages]
    assert len(peers) == 5
    assert peers[0] == peers[1] == peers[2]
    assert len(set(peers)) == 3  # a new connection after the 550, another after idling


async def test_a_connection_the_relay_dropped_is_not_used() -> None:
    handler = SmtpHandler()
    async with smtp_sink(handler, idle_timeout=0.2) as port:
        settings = SmtpSettings(host="127.0.0.1", port=port, security=SmtpSecurity.NONE)
        shared = SmtpRelay(settings, helo_name="sender.example")
        await shared.send("a@sender.example", "r@example.com", MESSAGE)
        await until(lambda: handler.connections_closed == 1)  # the relay timed us out
        await shared.send("a@sender.example", "r@example.com", MESSAGE)
        await shared.aclose()
    assert len(handler.messages) == 2
    assert handler.messages[0].peer != handler.messages[1].peer
