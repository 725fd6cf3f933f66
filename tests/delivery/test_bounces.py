"""Bounces recorded on real deliveries (loopback SMTP sink, real PostgreSQL, fake clock):
the attempt log, the failed state, and suppression after bounces on several days."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from app.delivery.bounces import BounceOutcome, record_bounce
from app.delivery.dsn import parse_dsn
from app.delivery.mail import format_bounce_address
from app.delivery.suppression import add_suppression, list_suppressions
from app.inbound.mail import parse_mail
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.conftest import bearer
from tests.delivery.dsnkit import (
    BOUNCE_ADDRESS,
    DELAYED,
    EXIM,
    POSTFIX,
    bounce_resources,
    dsn_mail,
    send_report,
)
from tests.delivery.env import DeliveryEnv, attempt_rows, deliver, delivery_states, store_report

RUA = "mailto:tlsrpt@example.com"


async def bounce(resources: Resources, raw: bytes) -> BounceOutcome:
    mail = resources.settings.mail
    tags = resources.bounce_tags()
    dsn = parse_dsn(parse_mail(raw), bounce_address=mail.bounce_address, tags=tags)
    assert dsn is not None
    return await record_bounce(
        resources.pool, resources.clock, resources.settings.bounces, dsn, tags
    )


@pytest.fixture
async def resources(env: DeliveryEnv) -> Resources:
    return await bounce_resources(env)


@pytest.fixture
async def client(resources: Resources) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(resources.settings, resources))
    token = await create_token(
        resources.pool, "operator", [Scope.READ, Scope.ADMIN], clock=resources.clock
    )
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=bearer(token)
    ) as c:
        yield c


async def test_postfix_dsn_is_recorded_on_its_delivery(
    env: DeliveryEnv, resources: Resources, client: httpx.AsyncClient
) -> None:
    _, other, _ = await send_report(resources, "example.net", RUA)
    report_pk, delivery_id, _ = await send_report(resources, "example.com", RUA)
    tags = resources.bounce_tags()
    assert tags is not None
    ours = format_bounce_address(BOUNCE_ADDRESS, delivery_id, tags)
    tag = tags.tag(f"bounce:{delivery_id}")
    assert env.smtp.messages[1].mail_from == ours == f"bounces+{delivery_id}.{tag}@sender.example"
    env.clock.advance(minutes=2)
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
    assert (outcome.delivery_id, outcome.outcome, outcome.bounce_days) == (
        delivery_id,
        "bounced",
        1,
    )
    assert not outcome.suppressed

    body = (await client.get(f"/v1/reports/{report_pk}/deliveries")).json()
    [delivery] = body["deliveries"]
    assert delivery["state"] == "failed"
    assert delivery["last_error"].startswith("bounced: 5.1.1 550 5.1.1 <tlsrpt@example.com>")
    sent, bounced = delivery["attempt_log"]
    assert sent["outcome"] == "sent"
    assert bounced == {
        "attempt": 1,
        "started_at": "2026-11-24T18:02:00Z",
        "finished_at": "2026-11-24T18:02:00Z",
        "outcome": "bounced",
        "smtp_reply_code": 550,
        "http_status": None,
        "reason": "DSN from relay.sender.example: failed 5.1.1",
        "excerpt": "550 5.1.1 <tlsrpt@example.com>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    }
    # The other report to the same rua is untouched.
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state, (SELECT count(*) FROM delivery_attempts WHERE delivery_id = d.id)"
            " FROM deliveries d WHERE id = %(id)s",
            {"id": other},
        )
        assert await cur.fetchone() == ("sent", 1)


async def test_exim_dsn_found_by_the_returned_message_id(resources: Resources) -> None:
    rua = "mailto:tlsrpt@example.org"
    _, delivery_id, report_id = await send_report(resources, "example.org", rua)
    # Not sent to the bounce address: only the returned message's Message-ID names it.
    raw = dsn_mail(
        resources.bounce_tags(), EXIM, delivery_id, report_id=report_id, via_envelope=False
    )
    outcome = await bounce(resources, raw)
    assert (outcome.delivery_id, outcome.outcome) == (delivery_id, "bounced")
    assert outcome.status is not None and outcome.status.status == "5.0.0"
    assert (await attempt_rows(resources, rua))[-1] == (
        1,
        "bounced",
        550,
        None,
        "DSN from smarthost.sender.example: failed 5.0.0",
        "550 5.2.1 Mailbox unavailable: account disabled",
    )
    # A Message-ID whose digest is not the report's names nothing of ours.
    forged = dsn_mail(
        resources.bounce_tags(), EXIM, delivery_id, report_id="another-report", via_envelope=False
    )
    assert await bounce(resources, forged) == BounceOutcome(None)


async def test_delayed_is_recorded_without_failing_or_counting(resources: Resources) -> None:
    _, delivery_id, _ = await send_report(resources, "example.com", RUA)
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), DELAYED, delivery_id))
    assert (outcome.outcome, outcome.bounce_days, outcome.suppressed) == ("delayed", 0, False)
    assert (await delivery_states(resources))[RUA][0] == "sent"
    assert [row[1] for row in await attempt_rows(resources, RUA)] == ["sent", "delayed"]


async def test_unknown_delivery_is_dropped(resources: Resources) -> None:
    assert await bounce(
        resources, dsn_mail(resources.bounce_tags(), POSTFIX, 999)
    ) == BounceOutcome(None)
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM delivery_attempts")
        assert await cur.fetchone() == (0,)


async def test_bounces_on_three_days_suppress_with_expiry_and_reason(
    env: DeliveryEnv, resources: Resources, client: httpx.AsyncClient
) -> None:
    for day, domains in enumerate((("a.example", "b.example"), ("a.example", "b.example"))):
        # Two reports to the rua a day (two policy domains): the day counts once.
        for domain in domains:
            _, delivery_id, _ = await send_report(resources, domain, RUA)
            outcome = await bounce(
                resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id)
            )
            assert (outcome.bounce_days, outcome.suppressed) == (day + 1, False)
        env.clock.advance(days=1)
    _, delivery_id, _ = await send_report(resources, "a.example", RUA)
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
    assert (outcome.bounce_days, outcome.suppressed) == (3, True)
    [entry] = await list_suppressions(resources.pool)
    assert (entry.target, entry.source) == (RUA, "bounces")
    assert entry.expires_at == env.clock() + timedelta(days=30)
    assert entry.comment.startswith("3 permanent bounces: 550 5.1.1 <tlsrpt@example.com>")
    [listed] = (await client.get("/v1/suppressions")).json()["suppressions"]
    assert (listed["target"], listed["source"], listed["active"]) == (RUA, "bounces", True)
    assert listed["expires_at"] == "2026-12-26T18:00:00Z"

    # The next report to it is not sent; the reason given is the bounces.
    now = env.clock()
    report_pk = await store_report(
        resources, day=now.date(), policy_domain="c.example", rua=[RUA], next_attempt_at=now
    )
    assert await deliver(resources, owner="t", limit=10) == 0
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state, last_error FROM deliveries WHERE report_pk = %(pk)s", {"pk": report_pk}
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == "suppressed"
    assert row[1].startswith("suppressed after bounces: 3 permanent bounces: 550 5.1.1")


async def test_a_delivered_report_clears_the_count(env: DeliveryEnv, resources: Resources) -> None:
    for _ in range(2):
        _, delivery_id, _ = await send_report(resources, "a.example", RUA)
        assert (
            await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
        ).bounce_days >= 1
        env.clock.advance(days=1)
    # This one is not bounced; once settled it counts as delivered.
    await send_report(resources, "a.example", RUA)
    env.clock.advance(days=1)
    _, delivery_id, _ = await send_report(resources, "a.example", RUA)
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
    assert (outcome.bounce_days, outcome.suppressed) == (1, False)
    assert await list_suppressions(resources.pool) == []


async def test_a_report_sent_just_before_a_bounce_does_not_clear_it(
    env: DeliveryEnv, resources: Resources
) -> None:
    # Day 1 and 2 bounce; on day 3 two reports go out and the first bounces while the
    # second's bounce is still on its way: it is not yet a delivered report.
    for _ in range(2):
        _, delivery_id, _ = await send_report(resources, "a.example", RUA)
        await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
        env.clock.advance(days=1)
    _, first, _ = await send_report(resources, "a.example", RUA)
    await send_report(resources, "b.example", RUA)
    env.clock.advance(minutes=5)
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, first))
    assert (outcome.bounce_days, outcome.suppressed) == (3, True)


async def test_an_operators_suppression_is_not_replaced(resources: Resources) -> None:
    resources.settings.bounces.suppress_after = 1
    _, delivery_id, _ = await send_report(resources, "a.example", RUA)
    await add_suppression(
        resources.pool, resources.clock, RUA, comment="asked by their postmaster", expires_at=None
    )
    outcome = await bounce(resources, dsn_mail(resources.bounce_tags(), POSTFIX, delivery_id))
    assert (outcome.bounce_days, outcome.suppressed) == (1, False)
    [entry] = await list_suppressions(resources.pool)
    assert (entry.source, entry.comment, entry.expires_at) == (
        "operator",
        "asked by their postmaster",
        None,
    )
