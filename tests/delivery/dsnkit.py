"""Report mails sent through the loopback sink and the DSNs that come back for them,
made from the Postfix and Exim samples in tests/samples/dsn/."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from app.config import BounceSettings, MailSettings
from app.delivery.mail import BounceTags, format_bounce_address, message_id_digest
from app.resources import Resources
from tests.delivery.env import DeliveryEnv, deliver, store_report

SAMPLES = Path(__file__).parent.parent / "samples" / "dsn"
BOUNCE_ADDRESS = "bounces@sender.example"
# The rua each sample bounced.
POSTFIX = ("postfix_user-unknown.eml", "tlsrpt@example.com")
EXIM = ("exim_mailbox-unavailable.eml", "tlsrpt@example.org")
DELAYED = ("postfix_delayed.eml", "tlsrpt@example.com")
VACATION = ("vacation_auto-reply.eml", "tlsrpt@example.com")


async def bounce_resources(env: DeliveryEnv, **bounces: float) -> Resources:
    """Resources whose report mail goes out as bounces+<id>@sender.example."""
    mail = MailSettings.model_validate(
        {"from": "reports@sender.example", "bounce_address": BOUNCE_ADDRESS}
    )
    return await env.open_resources(mail=mail, bounces=BounceSettings.model_validate(bounces))


async def send_report(resources: Resources, domain: str, rua: str) -> tuple[int, int, str]:
    """Store a report about yesterday for `domain` and send it to `rua` through the sink;
    (report pk, delivery id, report-id)."""
    now = resources.clock()
    report_pk = await store_report(
        resources,
        day=(now - timedelta(days=1)).date(),
        policy_domain=domain,
        rua=[rua],
        next_attempt_at=now - timedelta(seconds=1),
    )
    assert await deliver(resources, owner="t", limit=10) == 1
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT d.id, r.report_id FROM deliveries d JOIN reports r ON r.id = d.report_pk"
            " WHERE d.report_pk = %(pk)s",
            {"pk": report_pk},
        )
        row = await cur.fetchone()
    assert row is not None
    return report_pk, int(row[0]), str(row[1])


def dsn_mail(
    tags: BounceTags | None,
    sample: tuple[str, str],
    delivery_id: int,
    *,
    report_id: str | None = None,
    address: str | None = None,
    via_envelope: bool = True,
) -> bytes:
    """The sample, about `delivery_id`: sent to its bounce address (or, `via_envelope`
    False, to a plain one, so only the returned Message-ID names the delivery, whose
    digest is that of `report_id`)."""
    name, bounced = sample
    raw = (SAMPLES / name).read_bytes()
    assert tags is not None  # the env has a DKIM key
    bounce = format_bounce_address(BOUNCE_ADDRESS, delivery_id, tags)
    raw = raw.replace(
        b"bounces+1@sender.example",
        (bounce if via_envelope else "postmaster@sender.example").encode(),
    )
    digest = message_id_digest(report_id, tags) if report_id else "6b5e0b4c1d2e3f40"
    raw = raw.replace(b"tlsrpt.1.6b5e0b4c1d2e3f40", f"tlsrpt.{delivery_id}.{digest}".encode())
    if address is not None:
        raw = raw.replace(bounced.encode(), address.encode())
    return raw
