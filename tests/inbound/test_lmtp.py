"""The LMTP listener with a real LMTP client session (smtplib.LMTP) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.inbound.lmtp import parse_listen_address, start_lmtp
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.mailkit import SIGNING_DOMAIN, MailFactory, SigningKey

SAMPLES = Path(__file__).parent.parent / "samples"
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
REPORT_ADDRESS = "tls-reports@example.com"


async def listen(res: Resources) -> asyncio.Server:
    """The listener on a free loopback port, storing through the resources' committer."""
    return await start_lmtp(
        res.inbound_committer,
        res.resolver,
        res.pool,
        res.clock,
        res.settings,
        res.bounce_tags(),
        "127.0.0.1",
        0,
    )


@pytest.fixture
async def lmtp_port(resources: Resources, dns: FakeResolver) -> AsyncIterator[int]:
    resources.settings.inbound.lmtp_recipients = [REPORT_ADDRESS, "TLSRPT@example.net"]
    server = await listen(resources)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def deliver(port: int, raw: bytes, recipients: list[str]) -> list[tuple[int, bytes]]:
    """One LMTP session: LHLO, MAIL, RCPT each, DATA; every reply after DATA (RFC 2033)."""
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("tlsrpt@reporter.example")[0] == 250
        accepted = []
        replies: list[tuple[int, bytes]] = []
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code == 250:
                accepted.append(rcpt)
            else:
                replies.append((code, text))
        if not accepted:
            return replies
        replies.append(client.data(raw))
        replies += [client.getreply() for _ in accepted[1:]]
        return replies


async def session(port: int, raw: bytes, recipients: list[str]) -> list[tuple[int, bytes]]:
    # The client blocks; the listener runs on this loop.
    return await asyncio.to_thread(deliver, port, raw, recipients)


async def test_signed_report_mail_stored_with_dkim_pass(
    lmtp_port: int, signing_key: SigningKey, report_mail: MailFactory, resources: Resources,
    client: httpx.AsyncClient, reader: dict[str, str],
) -> None:  # fmt: skip
    raw = signing_key.sign(report_mail(RFC))
    ((code, text),) = await session(lmtp_port, raw, [REPORT_ADDRESS])
    assert code == 250, text
    assert text.startswith(b"2.0.0 report stored (id ")
    report_pk = int(text.rsplit(b" ", 1)[1].rstrip(b")"))
    stored = (await client.get(f"/v1/inbound/reports/{report_pk}", headers=reader)).json()
    assert (stored["received_via"], stored["dkim_verdict"], stored["dkim_domain"]) == (
        "lmtp",
        "pass",
        SIGNING_DOMAIN,
    )
    assert stored["success_count"] == 5326 and stored["failure_count"] == 303
    # Delivered again (an MTA retry): acknowledged, stored once.
    ((code, text),) = await session(lmtp_port, raw, [REPORT_ADDRESS])
    assert (code, text) == (250, f"2.0.0 report already stored (id {report_pk})".encode())


async def test_one_reply_per_recipient_and_unknown_recipient_refused(
    lmtp_port: int, report_mail: MailFactory
) -> None:
    replies = await session(
        lmtp_port, report_mail(RFC), ["nobody@example.com", REPORT_ADDRESS, "tlsrpt@EXAMPLE.net"]
    )
    assert replies[0] == (
        550,
        b"5.1.1 <nobody@example.com> is not a TLSRPT report address here",
    )
    assert [code for code, _ in replies[1:]] == [250, 250]


async def test_mail_without_report_gets_5xx_with_reason(lmtp_port: int) -> None:
    raw = b"From: a@b.example\r\nTo: tls-reports@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
    ((code, text),) = await session(lmtp_port, raw, [REPORT_ADDRESS])
    assert code == 550
    assert text.startswith(b"5.6.0 no TLSRPT report in this mail: the mail holds no report part")


async def test_invalid_report_and_oversized_mail(
    lmtp_port: int, report_mail: MailFactory, resources: Resources
) -> None:
    # Lenient receiving: a report whose policies can not be counted is still stored...
    lenient = (SAMPLES / "quirks/invalid-policy-type_missing-fields.json").read_bytes()
    ((code, _),) = await session(lmtp_port, report_mail(lenient), [REPORT_ADDRESS])
    assert code == 250
    # ...one with no report-id is not.
    invalid = orjson.dumps(orjson.loads(lenient) | {"report-id": None})
    ((code, text),) = await session(lmtp_port, report_mail(invalid), [REPORT_ADDRESS])
    assert (code, text) == (550, b"5.6.0 not a valid TLSRPT report: report-id: missing")
    resources.settings.inbound.max_body_bytes = 4096
    server = await listen(resources)
    try:
        port = server.sockets[0].getsockname()[1]
        big = report_mail(RFC, compress=False, content_type="application/tlsrpt+json") * 4
        ((code, _),) = await session(port, big, [REPORT_ADDRESS])
        assert code == 552
    finally:
        server.close()
        await server.wait_closed()


def test_listen_address() -> None:
    assert parse_listen_address("127.0.0.1:2424") == ("127.0.0.1", 2424)
    assert parse_listen_address("[::1]:24") == ("::1", 24)
    for bad in ("127.0.0.1", ":24", "host:0", "host:x"):
        with pytest.raises(ValueError, match="is not HOST:PORT"):
            parse_listen_address(bad)
