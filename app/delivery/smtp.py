"""Hands report mails to the configured SMTP relay (aiosmtplib) and classifies the reply.

Connections are reused across reports (a STARTTLS handshake per report would dominate),
checked with NOOP before reuse and closed after any failure, so a failure stays confined
to its own report. A 4xx reply, a timeout or a broken connection is temporary (RFC 5321
§4.2.1, retried per RFC 8460 §5.5);
a 5xx reply is permanent. Our own relay refusing our credentials or TLS is reported as
temporary too: it is the operator's configuration to fix, not the report recipient's fault.
The relay password is read only while connecting; it never reaches a log line or an error.

Connecting is done step by step (EHLO, STARTTLS, AUTH) so that each way a relay can
refuse our configuration gets its own sentence, naming the setting to change; `check`
(used by `tlsrpt doctor`) runs the same steps without sending, so the doctor and the
delivery errors say the same thing.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import aiosmtplib

from app.config import SmtpSecurity, SmtpSettings
from app.delivery.errors import (
    DeliveryError,
    PermanentDeliveryError,
    Receipt,
    TemporaryDeliveryError,
)

# Connections kept open between reports; relays drop idle clients after a few minutes.
MAX_IDLE = 16
IDLE_SECONDS = 20.0

# One wording for a relay that does not offer what TLSRPT_SMTP__SECURITY asks for: delivery
# errors and `tlsrpt doctor` both use these.
RELAY_WITHOUT_STARTTLS = (
    "the relay offers no STARTTLS: set TLSRPT_SMTP__SECURITY=tls if it takes implicit "
    "TLS, or none for a trusted relay on the same host or network"
)
RELAY_WITHOUT_AUTH = (
    "the relay offers no AUTH (after TLS): unset TLSRPT_SMTP__USERNAME or enable "
    "authentication on the relay"
)

RELAY_CERTIFICATE_NOT_VERIFIED = (
    "the relay's TLS certificate does not verify: set TLSRPT_SMTP__CA_FILE to the CA that "
    "issued it, or TLSRPT_SMTP__HOST to the name it is issued for"
)


class RelayConfigurationError(Exception):
    """The relay does not offer what the settings ask for; the message says which."""


def build_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store, plus an extra CA bundle when one is configured."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class SmtpRelay:
    """Sends one message to one recipient through the configured relay."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        helo_name: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._helo_name = helo_name
        self._monotonic = monotonic
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._tls_context = (
            None
            if settings.security is SmtpSecurity.NONE
            else build_tls_context(str(settings.ca_file) if settings.ca_file else None)
        )

    @property
    def target(self) -> str:
        """`host:port (security)`, for logs and dry runs."""
        s = self._settings
        return f"{s.host}:{s.port} ({s.security.value})"

    def _client(self) -> aiosmtplib.SMTP:
        s = self._settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            local_hostname=self._helo_name,
            timeout=s.timeout_seconds,
            use_tls=s.security is SmtpSecurity.TLS,
            # STARTTLS and AUTH are done by `_open`, one step at a time.
            start_tls=False,
            tls_context=self._tls_context,
        )

    async def _open(self) -> aiosmtplib.SMTP:
        """A connected client: greeting, EHLO, STARTTLS and AUTH as configured.

        Raises aiosmtplib's errors, OSError, or RelayConfigurationError.
        """
        s = self._settings
        client = self._client()
        try:
            await client.connect()
            await client.ehlo()
            if s.security is SmtpSecurity.STARTTLS:
                # Required, never opportunistic: no STARTTLS is an error, not a downgrade.
                if not client.supports_extension("starttls"):
                    raise RelayConfigurationError(RELAY_WITHOUT_STARTTLS)
                await client.starttls()
                await client.ehlo()  # RFC 3207 §4.2: forget what was said before TLS
            if s.username:
                if not client.supports_extension("auth") or not client.server_auth_methods:
                    raise RelayConfigurationError(RELAY_WITHOUT_AUTH)
                password = s.password.get_secret_value() if s.password is not None else ""
                await client.login(s.username, password)
        except BaseException:
            _discard(client)
            raise
        return client

    async def check(self) -> str:
        """Connect, EHLO, STARTTLS or TLS and AUTH as configured, then QUIT; nothing is
        sent. Returns what was done; raises TemporaryDeliveryError with the same reason a
        delivery would get."""
        try:
            client = await self._open()
            tls = client.get_transport_info("sslcontext") is not None
            await client.quit()
        except BaseException as exc:
            error = _delivery_error(exc)
            if error is None:
                raise
            raise error from None
        done = [f"connected to {self.target}", "EHLO accepted"]
        if tls:
            done.append("TLS certificate verified")
        if self._settings.username:
            done.append(f"AUTH accepted for {self._settings.username}")
        return ", ".join(done)

    async def send(self, sender: str, recipient: str, message: bytes) -> Receipt:
        """Receipt on acceptance; TemporaryDeliveryError or PermanentDeliveryError otherwise."""
        client: aiosmtplib.SMTP | None = None
        try:
            client = await self._acquire()
            _, reply = await client.sendmail(sender, [recipient], message)
        except BaseException as exc:
            _discard(client)  # after a failure the session's state is unknown
            error = _delivery_error(exc)
            if error is None:
                raise
            raise error from None
        self._release(client)
        return Receipt(code=250, excerpt=f"250 {reply}")

    async def _acquire(self) -> aiosmtplib.SMTP:
        """An idle connection that still answers NOOP, or a new one.

        Reuse saves a TCP (and TLS) handshake per report; NOOP first, so a connection the
        relay dropped while idle is never the one a message is written to.
        """
        now = self._monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if now - since > IDLE_SECONDS or not client.is_connected:
                _discard(client)
                continue
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                _discard(client)
                continue
            return client
        return await self._open()

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if len(self._idle) < MAX_IDLE and client.is_connected:
            self._idle.append((client, self._monotonic()))
        else:
            _discard(client)

    async def aclose(self) -> None:
        """Say QUIT on every idle connection."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                pass
            finally:
                _discard(client)


def _discard(client: aiosmtplib.SMTP | None) -> None:
    if client is not None and client.is_connected:
        client.close()


def _delivery_error(exc: BaseException) -> DeliveryError | None:
    """The delivery outcome of an aiosmtplib or socket error; None for anything else."""
    if isinstance(exc, RelayConfigurationError):
        return TemporaryDeliveryError(str(exc))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients[0]
        return _classify("relay refused the recipient", refused.code, refused.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return TemporaryDeliveryError(
            "relay refused our credentials", code=exc.code, excerpt=exc.message
        )
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError):
        # A refused greeting or EHLO is about the relay, not the recipient: keep trying.
        return TemporaryDeliveryError(
            "relay refused the connection", code=exc.code, excerpt=exc.message
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _classify("relay refused the message", exc.code, exc.message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TemporaryDeliveryError(
            RELAY_CERTIFICATE_NOT_VERIFIED, excerpt=exc.verify_message or str(exc)
        )
    if isinstance(exc, aiosmtplib.SMTPTimeoutError):
        return TemporaryDeliveryError("relay timed out", excerpt=str(exc))
    if isinstance(exc, aiosmtplib.SMTPException | OSError):
        # Connection refused or reset, a TLS handshake that failed.
        return TemporaryDeliveryError("relay unreachable", excerpt=f"{type(exc).__name__}: {exc}")
    return None


def _classify(reason: str, code: int, message: str) -> DeliveryError:
    # RFC 5321 §4.2.1: 5yz is a permanent negative completion reply, 4yz transient.
    excerpt = f"{code} {message}"
    if 500 <= code < 600:
        return PermanentDeliveryError(reason, code=code, excerpt=excerpt)
    return TemporaryDeliveryError(reason, code=code, excerpt=excerpt)
