"""Finding the report in a TLSRPT mail (RFC 8460 §5.3).

A report mail is `multipart/report` with the gzipped JSON as an
`application/tlsrpt+gzip` part, but senders and the MTAs between vary: some use
`application/tlsrpt+json`, `application/gzip`, `application/json`, or a generic type
with a `.json.gz` file name. `find_report` picks the best candidate part, decodes its
transfer encoding and says whether the bytes are gzip (by their magic, not by the
label). The JSON inside is authoritative: Subject, TLS-Report headers and file name
are kept for display only (RFC 8460 §5.6). The stdlib parser is used with the
`compat32` policy, which records defects instead of raising on the malformed headers
that arrive from the internet.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message

from app.tlsrpt.inflate import is_gzip
from app.tlsrpt.text import display

# The MIME tree of a report mail is a handful of parts; a thousand is an attack.
MAX_PARTS = 1000
# Header values shown with the stored report are cut to this length.
MAX_HEADER_CHARS = 1000

# RFC 8460 §5.3 media types first, then what real MTAs and senders relabel them as.
_EXACT_TYPES = {"application/tlsrpt+gzip": 0, "application/tlsrpt+json": 0}
_TOLERATED_TYPES = {"application/gzip": 1, "application/x-gzip": 1, "application/json": 1}
_REPORT_SUFFIXES = (".json.gz", ".json", ".gz")


class NoReportError(Exception):
    """The mail holds no readable report; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MailMeta:
    """Headers of a report mail, kept for display; the report body is authoritative."""

    from_: str | None = None
    subject: str | None = None
    message_id: str | None = None
    report_domain: str | None = None
    report_submitter: str | None = None


@dataclass(frozen=True, slots=True)
class FoundReport:
    """The report part of a mail: its bytes (gzip or JSON) and where they came from."""

    data: bytes
    gzipped: bool
    content_type: str
    filename: str | None
    meta: MailMeta


def parse_mail(raw: bytes) -> Message:
    """The whole RFC 5322 message (compat32: no header is parsed further than asked);
    raise NoReportError for hostile nesting."""
    try:
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    except RecursionError:
        raise NoReportError("the mail nests MIME parts too deeply") from None


def find_report(raw: bytes) -> FoundReport:
    """Return the report part of an RFC 5322 message; raise NoReportError."""
    return find_report_in(parse_mail(raw))


def find_report_in(message: Message) -> FoundReport:
    """Return the report part of a parsed message; raise NoReportError."""
    best: tuple[int, int, Message] | None = None
    for index, part in enumerate(_leaves(message)):
        rank = _rank(part)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, index, part)
    if best is None:
        raise NoReportError(
            "the mail holds no report part (application/tlsrpt+gzip, application/tlsrpt+json, "
            "or a .json.gz / .json attachment)"
        )
    part = best[2]
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if not data.strip():
        raise NoReportError("the report part is empty")
    gzipped = is_gzip(data)
    if not gzipped and data.lstrip(b" \t\r\n\xef\xbb\xbf")[:1] != b"{":
        raise NoReportError(
            f"the report part ({display(part.get_content_type(), 100)}) is neither gzip nor JSON"
        )
    return FoundReport(
        data=data,
        gzipped=gzipped,
        content_type=part.get_content_type(),
        filename=_filename(part),
        meta=_meta(message),
    )


def _leaves(message: Message) -> list[Message]:
    """Non-multipart parts, depth first, without recursion and at most MAX_PARTS."""
    leaves: list[Message] = []
    stack = [message]
    seen = 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            raise NoReportError(f"the mail has more than {MAX_PARTS} MIME parts")
        children = part.get_payload() if part.is_multipart() else None
        if isinstance(children, list):
            stack.extend(c for c in reversed(children) if isinstance(c, Message))
        else:
            leaves.append(part)
    return leaves


def _rank(part: Message) -> int | None:
    """How likely this part is the report: lower is better, None is not a report."""
    content_type = part.get_content_type()
    if content_type in _EXACT_TYPES:
        return _EXACT_TYPES[content_type]
    if content_type in _TOLERATED_TYPES:
        return _TOLERATED_TYPES[content_type]
    filename = (_filename(part) or "").lower()
    if filename.endswith(_REPORT_SUFFIXES):
        return 2
    return None


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename() or part.get_param("name")
    except (ValueError, LookupError):
        return None
    if isinstance(name, tuple):  # an RFC 2231 value the stdlib could not decode
        name = email.utils.collapse_rfc2231_value(name)
    return _header_text(name) if isinstance(name, str) else None


def _meta(message: Message) -> MailMeta:
    def header(name: str) -> str | None:
        value = message.get(name)
        return None if value is None else _header_text(str(value))

    return MailMeta(
        from_=header("From"),
        subject=header("Subject"),
        message_id=header("Message-ID"),
        report_domain=header("TLS-Report-Domain"),
        report_submitter=header("TLS-Report-Submitter"),
    )


def _header_text(value: str) -> str | None:
    """Decoded (RFC 2047), unfolded, NUL-free and bounded header text."""
    try:
        text = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        text = value
    text = " ".join(text.replace("\x00", "").split())
    return text[:MAX_HEADER_CHARS] or None
