"""Mail that comes back to report mail: delivery status notifications and auto-replies.

A DSN (RFC 3464) is a `multipart/report; report-type=delivery-status` (RFC 6522) whose
`message/delivery-status` part holds one block of per-message fields and one block per
recipient (`Action`, `Status`, `Diagnostic-Code`, `Final-Recipient`). Which delivery it
is about comes from where it was sent, the VERP envelope sender `bounces+<id>@domain` of
`TLSRPT_MAIL__BOUNCE_ADDRESS`, or failing that from the returned message's Message-ID
(`format_message_id`), which the caller checks against the report. An auto-reply (RFC
3834 `Auto-Submitted` other than `no`, or the older `X-Autoreply`, `Precedence`) says
nothing about the delivery. Pure: the stdlib `email` parser and nothing else; everything
read from the mail is hostile and is cut short before it is kept.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from app.delivery.errors import format_excerpt
from app.delivery.mail import BounceTags, parse_bounce_address, parse_message_id

# A DSN with more recipients than this is not about one report mail; the rest is ignored.
MAX_RECIPIENTS = 100
MAX_FIELD = 500
# RFC 3464 §2.3.4: class.subject.detail, class 2, 4 or 5.
_STATUS = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
_SMTP_CODE = re.compile(r"\s*([245][0-9][0-9])\b")
# RFC 3834 §5 and the headers older vacation programs and list servers write.
_AUTO_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk"})
_AUTO_FLAGS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """One per-recipient block of a DSN (RFC 3464 §2.3)."""

    action: str  # lower case: failed, delayed, delivered, relayed, expanded
    status: str  # `5.1.1`; empty when the MTA wrote none we can read
    final_recipient: str | None
    original_recipient: str | None
    diagnostic: str | None  # the text after the type: `550 5.1.1 <x@y>: ...`
    remote_mta: str | None

    @property
    def permanent(self) -> bool:
        """The report did not arrive and will not: `failed` with a 5.x.x status."""
        return self.action == "failed" and self.status.startswith("5.")

    @property
    def temporary(self) -> bool:
        """Not (yet) delivered, for a passing reason: `delayed`, or 4.x.x."""
        return not self.permanent and (self.action == "delayed" or self.status.startswith("4."))

    @property
    def smtp_code(self) -> int | None:
        """The SMTP reply code of an `smtp;` diagnostic."""
        found = _SMTP_CODE.match(self.diagnostic or "")
        return int(found[1]) if found else None

    def describe(self) -> str:
        """`550 5.1.1 <x@y>: User unknown`, or the status alone."""
        return self.diagnostic or f"{self.action} {self.status}".strip()


@dataclass(frozen=True, slots=True)
class Dsn:
    """What a DSN says and which delivery it names."""

    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]
    # From the bounce address it was sent to; None when only the Message-ID names one.
    delivery_id: int | None
    # (delivery id, digest) of the returned message's Message-ID, when it is ours.
    returned_message_id: tuple[int, str] | None

    def status_for(self, address: str | None) -> RecipientStatus | None:
        """The block about `address` (the rua's address); else the gravest one."""
        if not self.recipients:
            return None
        if address is not None:
            wanted = address.lower()
            for block in self.recipients:
                if wanted in {
                    (block.final_recipient or "").lower(),
                    (block.original_recipient or "").lower(),
                }:
                    return block
        return min(self.recipients, key=lambda b: (not b.permanent, not b.temporary))


def is_dsn(message: Message) -> bool:
    """RFC 6522 / RFC 3464 §2: the top level is a delivery-status report."""
    return (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).lower() == "delivery-status"
    )


def parse_dsn(
    message: Message,
    *,
    envelope_recipients: tuple[str, ...] = (),
    bounce_address: str | None,
    tags: BounceTags | None,
) -> Dsn | None:
    """The DSN in `message`, or None when it is not one (see `is_dsn`)."""
    if not is_dsn(message):
        return None
    parts = message.get_payload()
    if not isinstance(parts, list):
        return None
    reporting_mta: str | None = None
    recipients: list[RecipientStatus] = []
    returned: tuple[int, str] | None = None
    for part in parts:
        if not isinstance(part, Message):
            continue
        content_type = part.get_content_type()
        if content_type in ("message/delivery-status", "message/global-delivery-status"):
            blocks = _blocks(part)
            if blocks:
                reporting_mta = _field(blocks[0], "Reporting-MTA", typed=True)
                recipients += [_recipient(b) for b in blocks[1:] if b.get("Action")]
        elif returned is None and content_type in (
            "message/rfc822",
            "text/rfc822-headers",
            "message/global",
            "message/global-headers",
        ):
            returned = _returned_message_id(part)
    delivery_id = None
    if bounce_address is not None:
        for address in (*envelope_recipients, *_addressed_to(message)):
            delivery_id = parse_bounce_address(bounce_address, address, tags)
            if delivery_id is not None:
                break
    return Dsn(reporting_mta, tuple(recipients[:MAX_RECIPIENTS]), delivery_id, returned)


def is_auto_reply(message: Message) -> bool:
    """An out-of-office or other automatic answer (RFC 3834 §5, and older conventions)."""
    submitted = str(message.get("Auto-Submitted", "")).split(";", 1)[0].split("(", 1)[0]
    if submitted.strip().lower() not in ("", "no"):
        return True
    if any(message.get(name) is not None for name in _AUTO_FLAGS):
        return True
    return str(message.get("Precedence", "")).strip().lower() in _AUTO_PRECEDENCE


def _blocks(part: Message) -> list[Message]:
    """The field blocks of a delivery-status part (the parser splits them)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    parser = HeaderParser(policy=email.policy.compat32)
    text = str(payload).replace("\r\n", "\n")
    return [parser.parsestr(b.strip("\n") + "\n") for b in re.split(r"\n\s*\n", text) if b.strip()]


def _field(block: Message, name: str, *, typed: bool = False) -> str | None:
    """A field unfolded and cut short; `typed` drops the `rfc822;` / `dns;` type."""
    value = block.get(name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    if typed and ";" in text:
        text = text.split(";", 1)[1].strip()
    return format_excerpt(text, MAX_FIELD) or None


def _recipient(block: Message) -> RecipientStatus:
    status_text = _field(block, "Status") or ""
    found = _STATUS.search(status_text)
    return RecipientStatus(
        action=(_field(block, "Action") or "").lower(),
        status=found[0] if found else "",
        final_recipient=_address(_field(block, "Final-Recipient", typed=True)),
        original_recipient=_address(_field(block, "Original-Recipient", typed=True)),
        diagnostic=_field(block, "Diagnostic-Code", typed=True),
        remote_mta=_field(block, "Remote-MTA", typed=True),
    )


def _address(value: str | None) -> str | None:
    return value.strip().strip("<>") if value else None


def _returned_message_id(part: Message) -> tuple[int, str] | None:
    """The Message-ID of the returned message (whole, or its headers), when ours."""
    payload = part.get_payload()
    headers: Message | None = None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        headers = payload[0]
    elif isinstance(payload, str):
        headers = HeaderParser(policy=email.policy.compat32).parsestr(payload, headersonly=True)
    value = headers.get("Message-ID") if headers is not None else None
    return parse_message_id(str(value)) if value is not None else None


def _addressed_to(message: Message) -> list[str]:
    """Where the DSN was sent, as far as its headers tell: MTAs write the envelope
    recipient into Delivered-To / X-Original-To / Envelope-to, and a DSN's To is the
    returned message's envelope sender."""
    values = [
        str(v)
        for name in ("Delivered-To", "X-Original-To", "Envelope-to", "To")
        for v in message.get_all(name, [])
    ]
    return [address for _, address in getaddresses(values) if address]
