"""The envelope sender of report mail names the delivery (TLSRPT_MAIL__BOUNCE_ADDRESS)."""

from __future__ import annotations

from datetime import date, timedelta
from email import message_from_bytes

import pytest
from pydantic import ValidationError

from app.config import MailSettings
from app.delivery.mail import (
    BounceTags,
    format_bounce_address,
    format_message_id,
    message_id_digest,
    parse_bounce_address,
    parse_message_id,
)
from tests.delivery.env import DeliveryEnv, deliver, store_report

DAY = date(2026, 11, 23)


async def test_mail_from_names_the_delivery_and_header_from_stays(env: DeliveryEnv) -> None:
    mail = MailSettings.model_validate(
        {"from": "reports@sender.example", "bounce_address": "bounces@Sender.Example"}
    )
    resources = await env.open_resources(mail=mail)
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=env.clock() - timedelta(seconds=1),
    )
    assert await deliver(resources, owner="a", limit=10) == 1
    [received] = env.smtp.messages
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT id FROM deliveries")
        row = await cur.fetchone()
        assert row is not None
        delivery_id = int(row[0])
    tags = resources.bounce_tags()
    assert tags is not None
    assert received.mail_from == format_bounce_address("bounces@sender.example", delivery_id, tags)
    message = message_from_bytes(received.content)
    assert message["From"] == "reports@sender.example"
    assert parse_message_id(message["Message-ID"]) == (
        delivery_id,
        message_id_digest(f"{DAY.isoformat()}_example.com@sender.example", tags),
    )


async def test_without_a_bounce_address_mail_from_is_the_from(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=env.clock() - timedelta(seconds=1),
    )
    await deliver(resources, owner="a", limit=10)
    assert [m.mail_from for m in env.smtp.messages] == ["reports@sender.example"]


def test_bounce_address_round_trip() -> None:
    tags = BounceTags(b"\x01" * 32)
    address = format_bounce_address("bounces@example.com", 42, tags)
    assert address == f"bounces+42.{tags.tag('bounce:42')}@example.com"
    assert parse_bounce_address("bounces@example.com", f"<{address.upper()}>", tags) == 42
    templated = format_bounce_address("b-{id}-x@example.com", 7, tags)
    assert templated == f"b-7.{tags.tag('bounce:7')}-x@example.com"
    assert parse_bounce_address("b-{id}-x@example.com", templated, tags) == 7
    forged = address.replace("+42.", "+43.")
    for other in (
        "bounces@example.com",
        "bounces+42@example.com",
        forged,
        "bounces+1@other.example",
    ):
        assert parse_bounce_address("bounces@example.com", other, tags) is None
    # Another key (another installation, or none) recognises none of them.
    assert parse_bounce_address("bounces@example.com", address, BounceTags(b"\x02" * 32)) is None
    assert parse_bounce_address("bounces@example.com", address, None) is None


def test_message_id_round_trip() -> None:
    tags = BounceTags(b"\x01" * 32)
    value = format_message_id("r1", 9, "sender.example", tags)
    assert parse_message_id(value) == (9, message_id_digest("r1", tags))
    assert message_id_digest("r1", tags) != message_id_digest("r1", BounceTags(b"\x02" * 32))
    assert parse_message_id("<abc@example.com>") is None


@pytest.mark.parametrize(
    "bad",
    [
        "bounces",
        "bounces@localhost",
        "a+b@example.com",
        "x@{id}.example",
        "{id}{id}@e.x",
        "two words@example.com",
        "a..b@example.com",
    ],
)
def test_bounce_address_setting_is_checked(bad: str) -> None:
    with pytest.raises(ValidationError):
        MailSettings.model_validate({"bounce_address": bad})
