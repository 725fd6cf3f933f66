"""DSN parsing (RFC 3464) against Postfix and Exim bounces, and auto-reply recognition."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.delivery.dsn import is_auto_reply, is_dsn, parse_dsn
from app.delivery.mail import BounceTags, format_bounce_address
from app.inbound.mail import parse_mail

SAMPLES = Path(__file__).parent.parent / "samples" / "dsn"
BOUNCES = "bounces@sender.example"


TAGS = BounceTags(b"\x01" * 32)


def sample(name: str) -> bytes:
    """The sample, sent (as the service would) to delivery 1's tagged bounce address."""
    ours = format_bounce_address(BOUNCES, 1, TAGS).encode()
    return (SAMPLES / name).read_bytes().replace(b"bounces+1@sender.example", ours)


def test_postfix_user_unknown() -> None:
    dsn = parse_dsn(
        parse_mail(sample("postfix_user-unknown.eml")), bounce_address=BOUNCES, tags=TAGS
    )
    assert dsn is not None
    assert dsn.reporting_mta == "relay.sender.example"
    assert dsn.delivery_id == 1
    assert dsn.returned_message_id == (1, "6b5e0b4c1d2e3f40")
    [block] = dsn.recipients
    assert (block.action, block.status, block.final_recipient) == (
        "failed",
        "5.1.1",
        "tlsrpt@example.com",
    )
    assert block.original_recipient == "tlsrpt@example.com"
    assert block.remote_mta == "mx1.example.com"
    # Folded continuation lines are joined; the `smtp;` type is dropped.
    assert block.diagnostic == (
        "550 5.1.1 <tlsrpt@example.com>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    assert block.smtp_code == 550
    assert block.permanent and not block.temporary


def test_exim_mailbox_unavailable() -> None:
    dsn = parse_dsn(
        parse_mail(sample("exim_mailbox-unavailable.eml")), bounce_address=BOUNCES, tags=TAGS
    )
    assert dsn is not None
    assert dsn.reporting_mta == "smarthost.sender.example"
    assert dsn.returned_message_id == (1, "6b5e0b4c1d2e3f40")
    block = dsn.status_for("tlsrpt@example.org")
    assert block is not None
    assert (block.action, block.status, block.smtp_code) == ("failed", "5.0.0", 550)
    assert block.diagnostic == "550 5.2.1 Mailbox unavailable: account disabled"
    assert block.permanent


def test_delayed_is_temporary() -> None:
    dsn = parse_dsn(parse_mail(sample("postfix_delayed.eml")), bounce_address=BOUNCES, tags=TAGS)
    assert dsn is not None
    [block] = dsn.recipients
    assert (block.action, block.status) == ("delayed", "4.4.1")
    assert block.temporary and not block.permanent
    assert block.smtp_code is None


def test_delivery_id_from_the_envelope_recipient_first() -> None:
    message = parse_mail(sample("postfix_user-unknown.eml"))
    ours = format_bounce_address(BOUNCES, 77, TAGS)
    dsn = parse_dsn(message, envelope_recipients=(ours,), bounce_address=BOUNCES, tags=TAGS)
    assert dsn is not None and dsn.delivery_id == 77
    # Untagged (forged) bounce addresses, in the envelope or the headers, name nothing.
    untagged = parse_mail((SAMPLES / "postfix_user-unknown.eml").read_bytes())
    forged = ("bounces+77@sender.example",)
    dsn = parse_dsn(untagged, envelope_recipients=forged, bounce_address=BOUNCES, tags=TAGS)
    assert dsn is not None and dsn.delivery_id is None
    # Without a bounce address configured only the returned Message-ID names it.
    dsn = parse_dsn(message, bounce_address=None, tags=None)
    assert dsn is not None and dsn.delivery_id is None
    assert dsn.returned_message_id == (1, "6b5e0b4c1d2e3f40")


def test_failed_with_4xx_status_is_temporary() -> None:
    raw = sample("postfix_user-unknown.eml").replace(b"Status: 5.1.1", b"Status: 4.4.7")
    dsn = parse_dsn(parse_mail(raw), bounce_address=BOUNCES, tags=TAGS)
    assert dsn is not None
    [block] = dsn.recipients
    assert block.temporary and not block.permanent


def test_vacation_reply_is_an_auto_reply_not_a_dsn() -> None:
    message = parse_mail(sample("vacation_auto-reply.eml"))
    assert not is_dsn(message)
    assert parse_dsn(message, bounce_address=BOUNCES, tags=TAGS) is None
    assert is_auto_reply(message)


@pytest.mark.parametrize(
    ("headers", "auto"),
    [
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@y.example", True),
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: No (a person wrote this)", False),
        ("X-Autoreply: yes", True),
        ("Precedence: auto_reply", True),
        ("Precedence: bulk", True),
        ("Precedence: first-class", False),
        ("", False),
    ],
)
def test_auto_reply_headers(headers: str, auto: bool) -> None:
    raw = f"From: a@b.example\nTo: c@d.example\n{headers}\nSubject: x\n\nbody\n".encode()
    assert is_auto_reply(parse_mail(raw)) is auto
