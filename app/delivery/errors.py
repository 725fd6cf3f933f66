"""Outcomes of one delivery attempt, shared by the mail and HTTPS senders.

A sender either returns a `Receipt` (the report was handed over) or raises
`TemporaryDeliveryError` (try again later, RFC 8460 §5.5) or `PermanentDeliveryError`
(stop trying). Each carries the protocol code (SMTP reply code or HTTP status) and a short,
sanitised excerpt of what the other side said, which is stored with the attempt. Text from
the other side is hostile: excerpts are cut short and stripped of control characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EXCERPT_LIMIT = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def format_excerpt(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """Collapse control characters to spaces and cut to `limit` characters."""
    cleaned = _CONTROL.sub(" ", text).strip()
    if len(cleaned) > limit:
        return cleaned[: limit - 3] + "..."
    return cleaned


@dataclass(frozen=True, slots=True)
class Receipt:
    """The report was accepted: the SMTP reply or HTTP status that said so."""

    code: int | None
    excerpt: str


class DeliveryError(Exception):
    """A delivery attempt did not hand the report over."""

    def __init__(self, reason: str, *, code: int | None = None, excerpt: str = "") -> None:
        super().__init__(reason)
        self.reason = format_excerpt(reason)
        self.code = code
        self.excerpt = format_excerpt(excerpt)


class TemporaryDeliveryError(DeliveryError):
    """Try again later: 4xx SMTP replies, 408/429/5xx, timeouts, connection errors."""


class PermanentDeliveryError(DeliveryError):
    """Do not try again: 5xx SMTP replies, other HTTP 4xx, refused or malformed targets."""
