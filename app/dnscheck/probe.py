"""`dns-check --probe`: connect to an MX host as a sending MTA would, and judge its TLS.

EHLO, STARTTLS, then the certificate: trusted and valid for the host name (what MTA-STS
senders require, RFC 8461 §4.2), its expiry (a warning 14 days ahead), and whether it
matches the host's TLSA records (DANE, RFC 7672 §3). The probe goes only to addresses
the SSRF guard permits (the one HTTPS delivery uses) and sends no mail.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import aiosmtplib
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.delivery.https import IPNetwork, refusal_reason
from app.dnscheck.model import Finding, Status
from app.tlsrpt.dane import END_ENTITY_USAGES, Tlsa, tlsa_matches

SMTP_PORT = 25
EXPIRY_WARNING_DAYS = 14


class _NoStartTls(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    host: str
    addresses: Sequence[str]
    tlsa: Sequence[Tlsa]
    # The domain's MTA-STS mode, None without a policy: how bad an untrusted cert is.
    sts_mode: str | None


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    helo: str
    timeout: float
    allowed: Sequence[IPNetwork]
    ca_file: str | None = None
    port: int = SMTP_PORT  # tests only: the port sending MTAs use is 25


async def probe_host(target: ProbeTarget, settings: ProbeSettings, now: datetime) -> list[Finding]:
    host = target.host
    address = next(
        (
            a
            for a in target.addresses
            if refusal_reason(ipaddress.ip_address(a), settings.allowed) is None
        ),
        None,
    )
    if address is None:
        return [
            Finding(
                status=Status.WARN,
                subject=host,
                message="not probed: the host has no public address.",
            )
        ]
    verify = ssl.create_default_context()
    if settings.ca_file:
        verify.load_verify_locations(cafile=settings.ca_file)
    try:
        try:
            leaf = await _starttls(address, host, verify, settings)
            trust_problem: str | None = None
        except ssl.SSLCertVerificationError as exc:
            trust_problem = exc.verify_message or str(exc)
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE
            leaf = await _starttls(address, host, unverified, settings)
    except _NoStartTls:
        return [
            Finding(
                status=Status.FAIL,
                subject=host,
                message=f"{host} ({address}) does not offer STARTTLS: senders deliver in "
                "clear or, under MTA-STS or DANE, not at all (starttls-not-supported).",
            )
        ]
    except (aiosmtplib.SMTPException, OSError) as exc:
        return [
            Finding(
                status=Status.UNKNOWN,
                subject=host,
                message=f"could not probe {host} ({address}) on port {settings.port}: "
                f"{type(exc).__name__}: {str(exc)[:160]} (outbound port 25 may be blocked "
                "from here).",
            )
        ]
    return _judge(target, address, leaf, trust_problem, now)


async def _starttls(
    address: str, host: str, context: ssl.SSLContext, settings: ProbeSettings
) -> bytes:
    """The server's certificate (DER) after EHLO and STARTTLS verified by `context`."""
    client = aiosmtplib.SMTP(
        hostname=address,
        port=settings.port,
        local_hostname=settings.helo,
        timeout=settings.timeout,
        start_tls=False,
    )
    await client.connect()
    try:
        await client.ehlo()
        if not client.supports_extension("starttls"):
            raise _NoStartTls()
        await client.starttls(server_hostname=host, tls_context=context)
        ssl_object = client.get_transport_info("ssl_object")
        der: bytes = ssl_object.getpeercert(binary_form=True)
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass
        return der
    finally:
        client.close()


def _judge(
    target: ProbeTarget, address: str, leaf: bytes, trust_problem: str | None, now: datetime
) -> list[Finding]:
    host = target.host
    cert = x509.load_der_x509_certificate(leaf)
    findings: list[Finding] = []
    if trust_problem is None:
        findings.append(
            Finding(
                status=Status.OK,
                subject=host,
                message=f"STARTTLS works and the certificate of {host} ({address}) is trusted "
                "and valid for its name.",
            )
        )
    else:
        # RFC 8461 §4.2: in enforce mode a sender refuses a certificate it can not verify.
        status = Status.FAIL if target.sts_mode == "enforce" else Status.WARN
        findings.append(
            Finding(
                status=status,
                subject=host,
                message=f"the certificate of {host} ({address}) does not verify: "
                f"{trust_problem}; MTA-STS senders refuse it in enforce mode.",
            )
        )
    days = (cert.not_valid_after_utc - now).total_seconds() / 86400
    if days < 0:
        findings.append(
            Finding(
                status=Status.FAIL, subject=host, message=f"the certificate of {host} has expired."
            )
        )
    elif days < EXPIRY_WARNING_DAYS:
        findings.append(
            Finding(
                status=Status.WARN,
                subject=host,
                message=f"the certificate of {host} expires in {int(days)} days "
                f"({cert.not_valid_after_utc:%Y-%m-%d}).",
            )
        )
    if target.tlsa:
        findings.append(_dane(target, cert, leaf))
    return findings


def _dane(target: ProbeTarget, cert: x509.Certificate, leaf: bytes) -> Finding:
    host = target.host
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    end_entity = [r for r in target.tlsa if r.usage in END_ENTITY_USAGES]
    if any(tlsa_matches(r, leaf, spki) for r in end_entity):
        return Finding(
            status=Status.OK,
            subject=host,
            message=f"the certificate of {host} matches a TLSA record.",
        )
    if not end_entity:
        return Finding(
            status=Status.WARN,
            subject=host,
            message=f"not checked: the TLSA records of {host} name a trust anchor (usage 2), "
            "and the probe sees only the server's own certificate.",
        )
    return Finding(
        status=Status.FAIL,
        subject=host,
        message=f"the certificate of {host} matches none of its TLSA records: DANE senders "
        "refuse to deliver (RFC 7672 §3).",
    )
