"""DKIM signing of report mails (RFC 8460 §3: reports by mail MUST be DKIM-signed).

dkimpy does the signing; it is the maintained Python DKIM implementation and has an
RFC 8460 mode (`tlsrpt=True`) that never emits `l=`. The signing domain is the submitter
domain (the contact-info domain), the selector and key come from settings. The private
key is read once at start-up; its bytes never reach a log line or an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

# The two RFC 8460 §5.3 TLS-Report headers (receivers filter on them, so they must be
# covered), plus the RFC 6376 §5.4.1 recommendations present in a report mail.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"tls-required",
    b"auto-submitted",
)
# Listed a second time: an empty oversigned instance, so no relay can add another of these
# (RFC 6376 §8.15) and have a second TLS-Report-Domain look signed.
OVERSIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"subject",
    b"tls-report-domain",
    b"tls-report-submitter",
)


class DkimKeyError(Exception):
    """The configured DKIM key can not be used; the message names the file, not the key."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes = field(repr=False)


def load_dkim_key(domain: str, selector: str | None, key_file: Path | None) -> DkimKey | None:
    """The signing key, None when not configured, or DkimKeyError when unusable."""
    if not selector or key_file is None:
        return None
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"can not read DKIM key file {key_file}: {exc.strerror}") from None
    try:
        parse_pem_private_key(pem)
    except UnparsableKeyError:
        raise DkimKeyError(f"DKIM key file {key_file} is not a PEM RSA private key") from None
    if not selector.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise DkimKeyError(f"DKIM selector {selector!r} is not a DNS label sequence")
    return DkimKey(domain=domain, selector=selector, private_key=pem)


def sign_message(message: bytes, key: DkimKey) -> bytes:
    """Return the message with a DKIM-Signature header prepended.

    A plain function of bytes, so callers may run it in an executor: RSA in dkimpy is
    Python arithmetic and costs milliseconds.
    """
    header = dkim.sign(
        message,
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[*SIGNED_HEADERS, *OVERSIGNED_HEADERS],
        length=False,
        # RFC 8460 §3: dkimpy's TLSRPT mode, which never uses `l=`.
        tlsrpt=True,
    )
    return bytes(header) + message
