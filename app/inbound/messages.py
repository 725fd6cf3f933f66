"""One way in for any mail that reaches the service (LMTP, the `/mail` pipe endpoint, IMAP).

The addresses that receive reports from others are also where our own report mail comes
back: bounces (to the bounce address `bounces+<id>@...` or, from a careless MTA, to the
From) and out-of-office replies. `receive_message` tells them apart, in this order:

1. a DSN (RFC 3464) is recorded on the delivery it names (`app.delivery.bounces`). It
   comes first: a bounce often carries the whole returned report mail, whose report must
   not be stored as one received from someone else;
2. a report (RFC 8460 §5.3) is stored as `receive_mail` does;
3. an auto-reply (RFC 3834; it is checked last because report mails say
   `Auto-Submitted: auto-generated` too) is ignored.

Anything else raises `NoReportError`, as a mail without a report always has.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from app.clock import Clock
from app.config import BounceSettings, InboundSettings, MailSettings
from app.db.pool import Pool
from app.delivery.bounces import BounceOutcome, record_bounce
from app.delivery.dsn import is_auto_reply, parse_dsn
from app.delivery.mail import BounceTags, parse_bounce_address
from app.dns.resolver import TxtResolver
from app.inbound.group_commit import ReportCommitter
from app.inbound.mail import NoReportError, parse_mail
from app.inbound.service import Receipt, Via, off_loop_if_large, receive_mail
from app.tlsrpt.text import display

log = logging.getLogger(__name__)


class Handled(StrEnum):
    REPORT_STORED = "report_stored"
    DUPLICATE = "duplicate"
    # A DSN about one of our deliveries, recorded on it.
    BOUNCE_RECORDED = "bounce_recorded"
    # A DSN naming no delivery we know: logged and dropped, not refused (no error loop).
    BOUNCE_DROPPED = "bounce_dropped"
    AUTO_REPLY = "auto_reply_ignored"


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    handled: Handled
    receipt: Receipt | None = None  # a report (stored or duplicate)
    bounce: BounceOutcome | None = None  # a DSN


def is_bounce_address(mail: MailSettings, address: str, tags: BounceTags | None) -> bool:
    """Whether `address` is one of the bounce addresses report mail is sent from."""
    template = mail.bounce_address
    return template is not None and parse_bounce_address(template, address, tags) is not None


async def receive_message(
    committer: ReportCommitter,
    resolver: TxtResolver,
    pool: Pool,
    clock: Clock,
    raw: bytes,
    *,
    inbound: InboundSettings,
    mail: MailSettings,
    bounces: BounceSettings,
    tags: BounceTags | None,
    via: Via = Via.MAIL,
    recipients: Sequence[str] = (),
) -> MessageOutcome:
    """Store, record or ignore one mail (see the module docstring); `recipients` are its
    envelope recipients where the way in knows them (LMTP)."""
    message = await off_loop_if_large(len(raw), parse_mail, raw)
    dsn = parse_dsn(
        message,
        envelope_recipients=tuple(recipients),
        bounce_address=mail.bounce_address,
        tags=tags,
    )
    if dsn is not None:
        bounce = await record_bounce(pool, clock, bounces, dsn, tags)
        handled = Handled.BOUNCE_DROPPED if bounce.delivery_id is None else Handled.BOUNCE_RECORDED
        return MessageOutcome(handled, bounce=bounce)
    try:
        receipt = await receive_mail(committer, resolver, inbound, raw, message, via)
    except NoReportError:
        if not is_auto_reply(message):
            raise
        fields = {
            "via": via.value,
            "from": display(str(message.get("From", "")), 200),
            "subject": display(str(message.get("Subject", "")), 200),
        }
        log.info("auto_reply_ignored", extra={"fields": fields})
        return MessageOutcome(Handled.AUTO_REPLY)
    return MessageOutcome(
        Handled.DUPLICATE if receipt.duplicate else Handled.REPORT_STORED, receipt=receipt
    )
