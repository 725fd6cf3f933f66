"""Report mails for the inbound tests: built like a sender builds them, optionally signed."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable
from email.message import EmailMessage

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "tlsrpt2024"
SIGNING_DOMAIN = "reporter.example"
KEY_NAME = f"{SELECTOR}._domainkey.{SIGNING_DOMAIN}"
# RFC 8460 §3: the signature covers both TLS-Report headers.
SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id",
    b"tls-report-domain", b"tls-report-submitter",
]  # fmt: skip


class SigningKey:
    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.record = b"v=DKIM1; k=rsa; s=tlsrpt; p=" + base64.b64encode(public)

    def sign(self, raw: bytes) -> bytes:
        signature = dkim.sign(
            raw,
            SELECTOR.encode(),
            SIGNING_DOMAIN.encode(),
            self.private_pem,
            include_headers=SIGNED_HEADERS,
            tlsrpt=True,
        )
        return bytes(signature) + raw


MailFactory = Callable[..., bytes]


def build_report_mail(
    report_json: bytes,
    *,
    content_type: str = "application/tlsrpt+gzip",
    filename: str | None = "reporter.example!example.com!1714521600!1714607999.json.gz",
    compress: bool = True,
    subject_report_id: str = "subject-id@reporter.example",
) -> bytes:
    """A RFC 8460 §5.3 report mail around `report_json`."""
    message = EmailMessage()
    message["From"] = "tlsrpt@reporter.example"
    message["To"] = "tls-reports@example.com"
    message["Date"] = "Thu, 02 May 2024 03:00:00 +0000"
    message["Message-ID"] = "<abc@reporter.example>"
    message["Subject"] = (
        f"Report Domain: example.com Submitter: reporter.example Report-ID: <{subject_report_id}>"
    )
    message["TLS-Report-Domain"] = "example.com"
    message["TLS-Report-Submitter"] = "reporter.example"
    message.set_content("This is an aggregate TLS report from reporter.example\n")
    maintype, subtype = content_type.split("/")
    body = gzip.compress(report_json) if compress else report_json
    message.add_attachment(body, maintype=maintype, subtype=subtype, filename=filename)
    message.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"')
    # Keep the boundary: replace_header dropped it with the parameters.
    message.set_boundary("==boundary==")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
