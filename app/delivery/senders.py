"""The senders one process opens once: SMTP relay, HTTPS poster, DKIM key and signer.

`open_senders` reads the delivery settings, loads the DKIM key (a configured but unusable
key stops the start with `DkimKeyError`), `startup_summary` is the one line that says
what will happen, and `startup_warnings` says plainly what will not be sent (no DKIM
key, sending switched off, no From address) so the operator hears it at start-up rather
than from a missing report.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import httpx

from app.config import Settings
from app.delivery.https import AddressResolver, HttpsPoster
from app.delivery.mail import BounceTags, format_bounce_address, sender_address
from app.delivery.signing import DkimKey, load_dkim_key, sign_message, sign_rsa_with_openssl
from app.delivery.smtp import SmtpRelay
from app.tlsrpt.report import submitter_domain


class Signer:
    """Signs in worker processes when configured, else in this process."""

    def __init__(self, processes: int, key: DkimKey | None) -> None:
        self._executor: ProcessPoolExecutor | None = None
        if processes > 0 and key is not None:
            # spawn: a forked child would inherit the event loop, pool sockets and threads.
            # Each child hands the key's RSA to OpenSSL once, as this process did on load.
            self._executor = ProcessPoolExecutor(
                processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=sign_rsa_with_openssl,
                initargs=(key,),
            )

    async def sign(self, message: bytes, key: DkimKey) -> bytes:
        if self._executor is None:
            return sign_message(message, key)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, sign_message, message, key)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


@dataclass
class Senders:
    relay: SmtpRelay
    poster: HttpsPoster
    signer: Signer
    submitter: str
    dkim_key: DkimKey | None
    # None when neither TLSRPT_MAIL__FROM nor an email contact-info gives one.
    from_address: str | None
    # TLSRPT_MAIL__BOUNCE_ADDRESS: the envelope sender names the delivery.
    bounce_address: str | None = None

    @property
    def tags(self) -> BounceTags | None:
        """The bounce tags of the DKIM key (None without one: no mail is sent then)."""
        return None if self.dkim_key is None else self.dkim_key.tags

    def envelope_sender(self, delivery_id: int) -> str | None:
        """MAIL FROM of a report mail: the delivery's bounce address, else the From."""
        if self.bounce_address is None or self.tags is None:
            return self.from_address
        return format_bounce_address(self.bounce_address, delivery_id, self.tags)

    async def aclose(self) -> None:
        await self.relay.aclose()
        await self.poster.aclose()
        self.signer.close()


def open_senders(
    settings: Settings,
    resolver: AddressResolver,
    *,
    https_transport: httpx.AsyncBaseTransport | None = None,
) -> Senders:
    """Build the senders; raises DkimKeyError for a configured key that can not be used."""
    submitter = submitter_domain(settings.report.contact_info)
    try:
        from_address: str | None = sender_address(settings.mail.from_, settings.report.contact_info)
    except ValueError:
        from_address = None
    key = load_dkim_key(submitter, settings.dkim.selector, settings.dkim.private_key_file)
    return Senders(
        relay=SmtpRelay(settings.smtp, helo_name=submitter),
        poster=HttpsPoster(settings.https, resolver, transport=https_transport),
        signer=Signer(settings.delivery.signing_processes, key),
        submitter=submitter,
        dkim_key=key,
        from_address=from_address,
        bounce_address=settings.mail.bounce_address,
    )


def check_dkim_key(settings: Settings) -> DkimKey | None:
    """Load the configured DKIM key once, to fail the start early: DkimKeyError."""
    submitter = submitter_domain(settings.report.contact_info)
    return load_dkim_key(submitter, settings.dkim.selector, settings.dkim.private_key_file)


def startup_summary(settings: Settings, senders: Senders) -> str:
    """One line on what this process will do with built reports (logged at start-up)."""
    if not settings.send_reports:
        return "sending off (TLSRPT_SEND_REPORTS=false): reports are built, none is sent"
    if senders.dkim_key is None:
        mail = "mail reports disabled: no DKIM key"
    else:
        key = senders.dkim_key
        mail = (
            f"mail reports via relay {senders.relay.target}, DKIM domain {key.domain} "
            f"selector {key.selector}"
        )
    return f"sending on: {mail}; https reports posted directly"


def startup_warnings(settings: Settings, senders: Senders) -> list[str]:
    """Plain sentences about reports that will not go out with this configuration."""
    warnings = []
    if not settings.send_reports:
        warnings.append(
            "TLSRPT_SEND_REPORTS is false: reports are built and can be previewed, "
            "but none is sent."
        )
    if senders.dkim_key is None:
        warnings.append(
            "No DKIM key is configured (TLSRPT_DKIM__SELECTOR and "
            "TLSRPT_DKIM__PRIVATE_KEY_FILE): reports to mailto: addresses are not sent "
            "(RFC 8460 §3 requires a DKIM signature); their deliveries are marked "
            "'no_dkim_key'. HTTPS reports are sent."
        )
    if senders.from_address is None:
        warnings.append(
            "No From address: set TLSRPT_MAIL__FROM (the contact-info is not an email "
            "address); mail reports fail until it is set."
        )
    return warnings
