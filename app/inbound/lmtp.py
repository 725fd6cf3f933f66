"""The optional LMTP listener (RFC 2033) for report mails, on aiosmtpd.

An MTA delivers mail for the report addresses (`TLSRPT_INBOUND__LMTP_RECIPIENTS`;
empty accepts any) and for the bounce addresses of our report mail
(`bounces+<id>@...`, TLSRPT_MAIL__BOUNCE_ADDRESS) to this listener, started by
`tlsrpt serve --lmtp HOST:PORT`. Each mail goes through `receive_message`, as
`POST /v1/tlsrpt/{token}/mail` does. The reply comes after the outcome is committed:
250 when a report is stored (or already stored), a bounce recorded or dropped, or an
auto-reply ignored; 5xx with the reason when the mail is none of those or holds no valid
report (the MTA bounces it, nothing is retried), and 451 when storing failed for a
passing reason (the MTA tries again). LMTP wants one reply per accepted recipient; the
outcome is the same for each.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from app.clock import Clock
from app.config import BounceSettings, InboundSettings, MailSettings, Settings
from app.db.pool import Pool
from app.delivery.mail import BounceTags
from app.dns.resolver import TxtResolver
from app.inbound.group_commit import ReportCommitter
from app.inbound.mail import NoReportError
from app.inbound.messages import Handled, is_bounce_address, receive_message
from app.inbound.service import Via
from app.tlsrpt.inflate import InflatedTooLargeError, InflateError
from app.tlsrpt.received import InvalidReportError, ReportTooLargeError
from app.tlsrpt.text import display

log = logging.getLogger(__name__)


def parse_listen_address(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` to (host, port); ValueError with a reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _reply(code: str, text: str) -> str:
    # One line of ASCII: the reason may quote what the sender wrote.
    safe = display(text, 300).encode("ascii", "backslashreplace").decode("ascii")
    return f"{code} {safe}"


class ReportHandler:
    """aiosmtpd handler: accepts the report and bounce addresses, handles each mail."""

    def __init__(
        self,
        committer: ReportCommitter,
        resolver: TxtResolver,
        pool: Pool,
        clock: Clock,
        settings: InboundSettings,
        mail: MailSettings,
        bounces: BounceSettings,
        tags: BounceTags | None,
    ) -> None:
        self.receive = partial(
            receive_message,
            committer,
            resolver,
            pool,
            clock,
            inbound=settings,
            mail=mail,
            bounces=bounces,
            tags=tags,
            via=Via.LMTP,
        )
        self.mail = mail
        self.tags = tags
        self.recipients = {a.lower() for a in settings.lmtp_recipients}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        known = address.lower() in self.recipients or is_bounce_address(
            self.mail, address, self.tags
        )
        if self.recipients and not known:
            return _reply("550 5.1.1", f"<{address}> is not a TLSRPT report address here")
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        status = await self._store(data, envelope.rcpt_tos)
        # RFC 2033 §4.2: one reply per accepted recipient.
        return "\r\n".join([status] * len(envelope.rcpt_tos))

    async def _store(self, raw: bytes, recipients: list[str]) -> str:
        try:
            outcome = await self.receive(raw, recipients=recipients)
        except NoReportError as exc:
            return _reply("550 5.6.0", f"no TLSRPT report in this mail: {exc.reason}")
        except InvalidReportError as exc:
            return _reply("550 5.6.0", f"not a valid TLSRPT report: {exc}")
        except InflateError as exc:
            return _reply("550 5.6.0", f"the report attachment is not readable: {exc.reason}")
        except (InflatedTooLargeError, ReportTooLargeError) as exc:
            return _reply("552 5.3.4", f"the report is too large: {exc}")
        except Exception:
            # The database is away or similar: the MTA keeps the mail and retries.
            log.exception("lmtp_store_failed")
            return "451 4.3.0 the report could not be stored now; try again later"
        receipt, bounce = outcome.receipt, outcome.bounce
        if receipt is not None:
            if receipt.duplicate:
                return f"250 2.0.0 report already stored (id {receipt.report_pk})"
            return f"250 2.0.0 report stored (id {receipt.report_pk})"
        if bounce is not None and bounce.delivery_id is not None:
            return f"250 2.0.0 bounce recorded (delivery {bounce.delivery_id})"
        if outcome.handled is Handled.BOUNCE_DROPPED:
            return "250 2.0.0 bounce about no delivery known here; dropped"
        return "250 2.0.0 auto-reply ignored"


async def start_lmtp(
    committer: ReportCommitter,
    resolver: TxtResolver,
    pool: Pool,
    clock: Clock,
    settings: Settings,
    tags: BounceTags | None,
    host: str,
    port: int,
) -> asyncio.Server:
    """Listen for LMTP on (host, port) in the running loop; port 0 picks a free one.
    `tags` (from the DKIM key) tell our bounce addresses from forged ones."""
    handler = ReportHandler(
        committer, resolver, pool, clock, settings.inbound, settings.mail, settings.bounces, tags
    )
    inbound = settings.inbound

    def protocol() -> LMTP:
        return LMTP(handler, data_size_limit=inbound.max_body_bytes, ident="tlsrpt LMTP")

    server = await asyncio.get_running_loop().create_server(protocol, host, port)
    bound = [s.getsockname()[:2] for s in server.sockets]
    log.info("lmtp_listening", extra={"fields": {"addresses": bound}})
    return server
