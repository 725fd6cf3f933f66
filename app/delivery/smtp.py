"""Hands report mails to the configured SMTP relay (aiosmtplib) and classifies the reply.

One connection per message keeps a failure confined to its own report. A 4xx reply, a
timeout or a broken connection is temporary (RFC 5321 §4.2.1, retried per RFC 8460 §5.5);
a 5xx reply is permanent. Our own relay refusing our credentials or TLS is reported as
temporary too: it is the operator's configuration to fix, not the report recipient's fault.
The relay password is read only while connecting; it never reaches a log line or an error.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from app.config import SmtpSecurity, SmtpSettings
from app.delivery.errors import PermanentDeliveryError, Receipt, TemporaryDeliveryError


def build_tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system trust store, plus an extra CA bundle when one is configured."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class SmtpRelay:
    """Sends one message to one recipient through the configured relay."""

    def __init__(self, settings: SmtpSettings, *, helo_name: str) -> None:
        self._settings = settings
        self._helo_name = helo_name
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
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            local_hostname=self._helo_name,
            timeout=s.timeout_seconds,
            use_tls=s.security is SmtpSecurity.TLS,
            # starttls: required, never opportunistic (a downgrade is a connection error).
            start_tls=s.security is SmtpSecurity.STARTTLS,
            tls_context=self._tls_context,
        )

    async def send(self, sender: str, recipient: str, message: bytes) -> Receipt:
        """Receipt on acceptance; TemporaryDeliveryError or PermanentDeliveryError otherwise."""
        try:
            async with self._client() as client:
                _, reply = await client.sendmail(sender, [recipient], message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            raise _classify("relay refused the recipient", refused.code, refused.message) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TemporaryDeliveryError(
                "relay refused our credentials", code=exc.code, excerpt=exc.message
            ) from None
        except (aiosmtplib.SMTPConnectResponseError, aiosmtplib.SMTPHeloError) as exc:
            # A refused greeting or EHLO is about the relay, not the recipient: keep trying.
            raise TemporaryDeliveryError(
                "relay refused the connection", code=exc.code, excerpt=exc.message
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify("relay refused the message", exc.code, exc.message) from None
        except aiosmtplib.SMTPTimeoutError as exc:
            raise TemporaryDeliveryError("relay timed out", excerpt=str(exc)) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Connection refused or reset, TLS handshake or STARTTLS not offered.
            raise TemporaryDeliveryError(
                "relay unreachable", excerpt=f"{type(exc).__name__}: {exc}"
            ) from None
        return Receipt(code=250, excerpt=f"250 {reply}")


def _classify(
    reason: str, code: int, message: str
) -> TemporaryDeliveryError | PermanentDeliveryError:
    # RFC 5321 §4.2.1: 5yz is a permanent negative completion reply, 4yz transient.
    excerpt = f"{code} {message}"
    if 500 <= code < 600:
        return PermanentDeliveryError(reason, code=code, excerpt=excerpt)
    return TemporaryDeliveryError(reason, code=code, excerpt=excerpt)
