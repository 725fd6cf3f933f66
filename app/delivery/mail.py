"""The RFC 8460 §5.3 report mail: `multipart/report; report-type="tlsrpt"`.

Every value that ends up in a header comes from someone else's DNS (the rua address, the
policy domain) or from stored data, so it is validated to a strict shape here, and each
header value is checked once more to be printable ASCII (no CR/LF can start a header of
its own) before the stdlib `email` package writes the message. A value that does not fit
is a `ValueError` naming the field; the caller records it as a permanent failure instead
of sending a damaged or extended message. The message is assembled with the `email.mime`
classes and the compat32 policy: the modern policy parses every header value into a
syntax tree, which made building a report cost more than signing it, and the values here
are already validated atoms.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from email import policy
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.text import MIMEText
from email.utils import format_datetime
from urllib.parse import unquote

from app.tlsrpt.names import normalise_domain

# RFC 5322 §2.1.1: lines MUST be at most 998 characters. Validated values are bounded well
# below that, so nothing is ever folded into RFC 2047 encoded-words, which would hide the
# domain names receivers match on.
_POLICY = policy.compat32.clone(linesep="\r\n", max_line_length=998)
# What any header value must be after validation: printable ASCII, one line.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,900}\Z")

# RFC 5322 §3.2.3 atext, dot-separated: no quoting, no spaces, no control characters.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
# SPEC §4: the report-id goes inside <...>; printable ASCII without spaces or angle brackets.
_REPORT_ID = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]{1,255}\Z")
# RFC 8460 §5.1 file name: domains, digits, '!', '.', and the letters/digits of the id.
_FILENAME = re.compile(r"[A-Za-z0-9._!-]{1,255}\Z")

TLSRPT_GZIP = "tlsrpt+gzip"


def parse_mailto(rua: str) -> str:
    """Return the one address of a `mailto:` rua (RFC 6068), or raise ValueError.

    Header fields in the URI (`?subject=...`) are ignored: a report's headers are ours.
    """
    scheme, _, rest = rua.partition(":")
    if scheme.lower() != "mailto" or not rest:
        raise ValueError("rua is not a mailto: URI")
    to = unquote(rest.partition("?")[0], errors="strict")
    if "," in to:
        raise ValueError("rua names more than one address")
    return _normalise_address(to, "rua")


def _normalise_address(value: str, field: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local:
        raise ValueError(f"{field} is not an email address")
    if len(local) > 64 or not _LOCAL_PART.match(local):
        raise ValueError(f"{field} has an unsupported local part")
    try:
        domain = normalise_domain(domain)
    except ValueError as exc:
        raise ValueError(f"{field} has an invalid domain: {exc}") from None
    address = f"{local}@{domain}"
    if len(address) > 254:
        raise ValueError(f"{field} is longer than 254 characters")
    return address


def sender_address(from_setting: str | None, contact_info: str) -> str:
    """The From address: the configured one, else the contact-info address."""
    value = from_setting or contact_info
    if "@" not in value or "://" in value:
        raise ValueError("mail.from is unset and contact-info is not an email address")
    return _normalise_address(value.removeprefix("mailto:"), "mail.from")


@dataclass(frozen=True, slots=True)
class ReportMail:
    """What one report mail says; `build_report_message` validates every field."""

    report_id: str
    policy_domain: str
    submitter: str
    day: date
    filename: str
    report_gzip: bytes
    from_address: str
    to_address: str


@dataclass(frozen=True, slots=True)
class BounceTags:
    """What makes a bounce about our mail impossible to forge: the delivery id in a bounce
    address or Message-ID comes with an HMAC-SHA256 tag under a key derived from the DKIM
    private key (report mail is only sent with one). Without it, anyone could send DSNs
    for guessed ids and get any rua suppressed."""

    key: bytes = field(repr=False)

    @classmethod
    def from_private_key(cls, private_key: bytes) -> BounceTags:
        return cls(hashlib.sha256(b"tlsrpt bounce tags\0" + private_key).digest())

    def tag(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()[:16]

    def matches(self, text: str, tag: str) -> bool:
        return hmac.compare_digest(self.tag(text), tag.lower())


def format_message_id(report_id: str, delivery_id: int, submitter: str, tags: BounceTags) -> str:
    """A Message-ID stable across retries of one delivery, so receivers can de-duplicate."""
    return f"<tlsrpt.{delivery_id}.{message_id_digest(report_id, tags)}@{submitter}>"


def message_id_digest(report_id: str, tags: BounceTags) -> str:
    """The part of a report mail's Message-ID that ties it to its report (and to us)."""
    return tags.tag("message-id:" + report_id)


_MESSAGE_ID = re.compile(r"\s*<tlsrpt\.([0-9]{1,18})\.([0-9a-f]{16})@[^<>\s]+>\s*\Z")


def parse_message_id(value: str) -> tuple[int, str] | None:
    """(delivery id, digest) of a Message-ID `format_message_id` wrote, else None."""
    found = _MESSAGE_ID.match(value)
    return (int(found[1]), found[2]) if found else None


def format_bounce_address(template: str, delivery_id: int, tags: BounceTags) -> str:
    """The envelope sender naming one delivery (VERP) with its tag: `bounces@d` ->
    `bounces+42.<tag>@d`, or `{id}` in the local part replaced by `42.<tag>`."""
    local, _, domain = template.rpartition("@")
    if "{id}" not in local:
        local += "+{id}"
    signed = f"{delivery_id}.{tags.tag(f'bounce:{delivery_id}')}"
    return _normalise_address(f"{local.replace('{id}', signed)}@{domain}", "bounce")


def parse_bounce_address(template: str, address: str, tags: BounceTags | None) -> int | None:
    """The delivery id in an address `format_bounce_address` made from `template`, when
    its tag is ours (never without `tags`)."""
    if tags is None:
        return None
    local, _, domain = template.rpartition("@")
    if "{id}" not in local:
        local += "+{id}"
    before, _, after = local.partition("{id}")
    try:
        domain = normalise_domain(domain)
    except ValueError:
        return None
    pattern = (
        re.escape(before)
        + r"([0-9]{1,18})\.([0-9a-f]{16})"
        + re.escape(after)
        + "@"
        + re.escape(domain)
    )
    found = re.fullmatch(pattern, address.strip().strip("<>"), re.IGNORECASE)
    if found is None or not tags.matches(f"bounce:{found[1]}", found[2]):
        return None
    return int(found[1])


def build_report_message(mail: ReportMail, *, now: datetime, message_id: str) -> bytes:
    """The unsigned message in wire form (CRLF line ends), or ValueError naming the field."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    policy_domain = _domain(mail.policy_domain, "policy_domain")
    submitter = _domain(mail.submitter, "submitter")
    if not _REPORT_ID.match(mail.report_id):
        raise ValueError("report_id is not printable ASCII without spaces or <>")
    if not _FILENAME.match(mail.filename):
        raise ValueError("filename has characters outside RFC 8460 §5.1")
    from_address = _normalise_address(mail.from_address, "from")
    to_address = _normalise_address(mail.to_address, "to")
    if not re.fullmatch(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,250}>", message_id):
        raise ValueError("message_id is not <printable ASCII>")

    msg = Message(policy=_POLICY)
    subject = f"Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{mail.report_id}>"
    for name, value in (
        ("From", from_address),
        ("To", to_address),
        ("Date", format_datetime(now)),
        ("Message-ID", message_id),
        # RFC 8460 §5.3: the subject, and the two headers receivers filter on.
        ("Subject", subject),
        ("TLS-Report-Domain", policy_domain),
        ("TLS-Report-Submitter", submitter),
        # RFC 8460 §5.3.1: a report must get through even where TLS fails (RFC 8689).
        ("TLS-Required", "No"),
        # RFC 3834: no auto-replies to this message.
        ("Auto-Submitted", "auto-generated"),
        ("MIME-Version", "1.0"),
        # RFC 8460 §5.3 / RFC 6522: multipart/report, the human part first.
        ("Content-Type", 'multipart/report; report-type="tlsrpt"'),
    ):
        if not _HEADER_VALUE.match(value):
            raise ValueError(f"{name} is not one line of printable ASCII")
        msg[name] = value
    text = MIMEText(
        _text_part(mail.day, policy_domain, submitter, mail.filename), "plain", "us-ascii"
    )
    # RFC 8460 §5.3: the gzip report as application/tlsrpt+gzip, base64, with its §5.1 name.
    report = MIMEApplication(mail.report_gzip, TLSRPT_GZIP)
    report.add_header("Content-Disposition", "attachment", filename=mail.filename)
    for part in (text, report):
        del part["MIME-Version"]  # only the top level carries it (RFC 2045 §4)
        msg.attach(part)
    return msg.as_bytes(policy=_POLICY)


def _domain(value: str, field: str) -> str:
    try:
        normalised = normalise_domain(value)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    if normalised != value:
        raise ValueError(f"{field} is not a normalised A-label domain")
    return normalised


def _text_part(day: date, policy_domain: str, submitter: str, filename: str) -> str:
    return (
        f"This is an aggregate SMTP TLS report (RFC 8460) from {submitter}\n"
        f"for the policy domain {policy_domain}, covering {day.isoformat()} (UTC).\n"
        f"\n"
        f"The report is attached as {filename}.\n"
    )
