"""Alert digests: the JSON payload, its signature, and handing it to webhooks and mail.

One digest carries every alert raised since the last one; its `text` is Slack- and
Mattermost-compatible and names at most `digest_max_items` alerts, so a storm of 10,000
failing domains is one short message. Webhooks are POSTed through the HTTPS poster of
report delivery (the same SSRF guard and allow-list, no redirects); the signature is
`X-TLSRPT-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, computed
anew on every attempt. Mail goes through the configured relay.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import Counter
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import orjson

from app.delivery.errors import PermanentDeliveryError, Receipt
from app.delivery.senders import Senders

SIGNATURE_HEADER = "X-TLSRPT-Signature"
PAYLOAD_TYPE = "tlsrpt.alerts"


def format_signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the shared secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def build_payload(
    alerts: list[dict[str, Any]], *, service: str, now: datetime, max_items: int
) -> dict[str, Any]:
    """The digest of `alerts` (dicts with kind, subject, summary, ...), for every channel."""
    by_kind = Counter(a["kind"] for a in alerts)
    listed = alerts[:max_items]
    head = f"TLSRPT ({service}): {len(alerts)} new alert{'s' if len(alerts) != 1 else ''}"
    if len(by_kind) > 1 or len(alerts) > max_items:
        head += " (" + ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) + ")"
    lines = [head] + [f"• [{a['kind']}] {a['summary']}" for a in listed]
    if len(alerts) > len(listed):
        lines.append(f"… and {len(alerts) - len(listed)} more (GET /v1/alerts)")
    return {
        "type": PAYLOAD_TYPE,
        "text": "\n".join(lines),
        "service": service,
        "created_at": now.isoformat(),
        "total": len(alerts),
        "counts": dict(sorted(by_kind.items())),
        "alerts": listed,
        "omitted": len(alerts) - len(listed),
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


async def post_webhook(
    senders: Senders, url: str, payload: dict[str, Any], *, secret: str | None, now: datetime
) -> Receipt:
    body = encode_payload(payload)
    headers = {}
    if secret:
        headers[SIGNATURE_HEADER] = format_signature(secret, int(now.timestamp()), body)
    return await senders.poster.post(url, body, content_type="application/json", headers=headers)


def build_mail(payload: dict[str, Any], *, sender: str, recipient: str, now: datetime) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = format_datetime(now)
    domain = sender.rpartition("@")[2]
    message["Message-ID"] = f"<alerts.{secrets.token_hex(12)}@{domain}>"
    message["Subject"] = payload["text"].split("\n", 1)[0]
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(payload["text"] + "\n")
    return message.as_bytes()


async def send_mail(
    senders: Senders, recipient: str, payload: dict[str, Any], *, now: datetime
) -> Receipt:
    if senders.from_address is None:
        raise PermanentDeliveryError(
            "no From address: set TLSRPT_MAIL__FROM or an email TLSRPT_REPORT__CONTACT_INFO"
        )
    message = build_mail(payload, sender=senders.from_address, recipient=recipient, now=now)
    return await senders.relay.send(senders.from_address, recipient, message)
