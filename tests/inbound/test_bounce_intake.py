"""What comes back to our report mail, through LMTP and the `/mail` pipe endpoint: DSNs
are recorded on their delivery, auto-replies ignored, reports stored as before."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.delivery.mail import format_bounce_address
from app.inbound.lmtp import start_lmtp
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.delivery.conftest import dkim_pair, env, test_ca  # noqa: F401  (fixtures)
from tests.delivery.dsnkit import (
    BOUNCE_ADDRESS,
    EXIM,
    POSTFIX,
    VACATION,
    bounce_resources,
    dsn_mail,
    send_report,
)
from tests.delivery.env import DeliveryEnv, attempt_rows
from tests.inbound.dovecot import Dovecot
from tests.inbound.imapkit import DONE, INVALID, intake
from tests.inbound.test_lmtp import session

REPORT_ADDRESS = "tls-reports@example.com"
RUA = "mailto:tlsrpt@example.com"
PLAIN = b"From: a@b.example\nTo: tls-reports@example.com\nSubject: hi\n\nhello\n"


@pytest.fixture
async def resources(env: DeliveryEnv) -> Resources:  # noqa: F811
    res = await bounce_resources(env)
    res.settings.inbound.lmtp_recipients = [REPORT_ADDRESS]
    return res


@pytest.fixture
async def lmtp_port(resources: Resources) -> AsyncIterator[int]:
    server = await start_lmtp(
        resources.inbound_committer,
        resources.resolver,
        resources.pool,
        resources.clock,
        resources.settings,
        resources.bounce_tags(),
        "127.0.0.1",
        0,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def pipe(resources: Resources) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client of the app and the `/mail` path of an inbound token."""
    token = await create_token(resources.pool, "mta", [Scope.INBOUND], clock=resources.clock)
    transport = httpx.ASGITransport(app=create_app(resources.settings, resources))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, f"/v1/tlsrpt/{token}/mail"


async def post_mail(pipe: tuple[httpx.AsyncClient, str], raw: bytes) -> httpx.Response:
    client, path = pipe
    return await client.post(path, content=raw, headers={"Content-Type": "message/rfc822"})


async def lmtp(port: int, raw: bytes, recipients: list[str]) -> list[tuple[int, bytes]]:
    """One LMTP session with the mail in wire form (CRLF line ends)."""
    return await session(port, raw.replace(b"\n", b"\r\n"), recipients)


async def inbound_reports(resources: Resources) -> int:
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM inbound_reports")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_lmtp_takes_dsns_at_the_bounce_addresses(
    resources: Resources, lmtp_port: int
) -> None:
    _, delivery_id, _ = await send_report(resources, "example.com", RUA)
    tags = resources.bounce_tags()
    assert tags is not None
    bounce_to = format_bounce_address(BOUNCE_ADDRESS, delivery_id, tags)
    replies = await lmtp(lmtp_port, dsn_mail(tags, POSTFIX, delivery_id), [bounce_to])
    assert replies == [(250, f"2.0.0 bounce recorded (delivery {delivery_id})".encode())]
    assert [row[1] for row in await attempt_rows(resources, RUA)] == ["sent", "bounced"]

    # A DSN about a delivery unknown here is taken and dropped: refusing it would only
    # make the MTA send it again.
    unknown = format_bounce_address(BOUNCE_ADDRESS, 4242, tags)
    replies = await lmtp(lmtp_port, dsn_mail(tags, POSTFIX, 4242), [unknown])
    assert replies == [(250, b"2.0.0 bounce about no delivery known here; dropped")]
    # A bounce address without our tag (forged, or guessed) is refused at RCPT.
    replies = await lmtp(
        lmtp_port, dsn_mail(tags, POSTFIX, delivery_id), [f"bounces+{delivery_id}@sender.example"]
    )
    assert replies[0][0] == 550
    # Other addresses are still refused, and a mail that is nothing of ours still 5xx.
    replies = await lmtp(lmtp_port, PLAIN, ["bounces@sender.example", REPORT_ADDRESS])
    assert replies[0][0] == 550 and replies[1][0] == 550
    assert replies[1][1].startswith(b"5.6.0 no TLSRPT report in this mail")


async def test_lmtp_ignores_auto_replies(resources: Resources, lmtp_port: int) -> None:
    _, delivery_id, _ = await send_report(resources, "example.com", RUA)
    replies = await lmtp(
        lmtp_port, dsn_mail(resources.bounce_tags(), VACATION, delivery_id), [REPORT_ADDRESS]
    )
    assert replies == [(250, b"2.0.0 auto-reply ignored")]
    assert [row[1] for row in await attempt_rows(resources, RUA)] == ["sent"]


async def test_pipe_endpoint_records_dsns_and_ignores_auto_replies(
    resources: Resources, pipe: tuple[httpx.AsyncClient, str]
) -> None:
    rua = "mailto:tlsrpt@example.org"
    _, delivery_id, _ = await send_report(resources, "example.org", rua)
    response = await post_mail(pipe, dsn_mail(resources.bounce_tags(), EXIM, delivery_id))
    assert response.status_code == 202
    assert response.json() == {
        "outcome": "bounce_recorded",
        "delivery_id": delivery_id,
        "attempt_outcome": "bounced",
        "status": "5.0.0",
        "suppressed": False,
    }
    assert [row[1] for row in await attempt_rows(resources, rua)] == ["sent", "bounced"]

    response = await post_mail(pipe, dsn_mail(resources.bounce_tags(), EXIM, 4242))
    assert (response.status_code, response.json()["outcome"]) == (202, "bounce_dropped")
    response = await post_mail(pipe, dsn_mail(resources.bounce_tags(), VACATION, delivery_id))
    assert (response.status_code, response.json()["outcome"]) == (202, "auto_reply_ignored")
    response = await post_mail(pipe, PLAIN)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "no_report")


async def test_a_bounce_returning_the_whole_report_is_not_stored_as_a_report(
    env: DeliveryEnv,  # noqa: F811
    resources: Resources,
    pipe: tuple[httpx.AsyncClient, str],
) -> None:
    rua = "mailto:tlsrpt@example.org"
    _, delivery_id, _ = await send_report(resources, "example.org", rua)
    sent = env.smtp.messages[-1].content.replace(b"\r\n", b"\n")
    raw = dsn_mail(resources.bounce_tags(), EXIM, delivery_id)
    head, marker, rest = raw.partition(b"Content-type: message/rfc822\n\n")
    _, boundary, tail = rest.partition(b"\n--1732321872-eximdsn-1804289383--")
    response = await post_mail(pipe, head + marker + sent + boundary + tail)
    assert (response.status_code, response.json()["outcome"]) == (202, "bounce_recorded")
    assert await inbound_reports(resources) == 0


async def test_imap_records_dsns_and_ignores_auto_replies(
    resources: Resources, dovecot: Dovecot
) -> None:
    """A bounce that lands in the watched mailbox reaches its delivery like one by LMTP."""
    _, delivery_id, _ = await send_report(resources, "example.com", RUA)
    dovecot.append(
        dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id),
        dsn_mail(resources.bounce_tags(), VACATION, delivery_id),
        PLAIN,
    )
    summary = await intake(resources, dovecot.settings()).run_once()
    assert summary.outcomes == {"bounce_recorded": 1, "auto_reply_ignored": 1, "invalid": 1}
    assert [row[1] for row in await attempt_rows(resources, RUA)] == ["sent", "bounced"]
    assert len(dovecot.messages(DONE)) == 2 and len(dovecot.messages(INVALID)) == 1
    assert await inbound_reports(resources) == 0


async def test_hostile_nesting_is_a_422_not_a_crash(
    resources: Resources, pipe: tuple[httpx.AsyncClient, str]
) -> None:
    """The one parse of an incoming mail refuses nesting that exhausts the recursion."""
    head = b"".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'.encode()
        for i in range(3000)
    )
    raw = b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + head
    response = await post_mail(pipe, raw)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "no_report"
    assert await inbound_reports(resources) == 0
