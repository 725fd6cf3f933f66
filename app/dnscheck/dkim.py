"""The sending side of the DNS check: a new DKIM key, and whether DNS publishes ours.

RFC 8460 §3 requires report mail to be DKIM-signed by the submitter domain. `generate_key`
writes a new RSA key (mode 0600, never over an existing file) and returns the TXT record
to publish at `<selector>._domainkey.<domain>`. `check_published_key` compares what DNS
publishes there with the configured private key; `check_sending` adds whether the From
domain aligns with the signing domain (RFC 7489 §3.1.1, as receivers' DMARC checks it).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import Settings
from app.delivery.mail import sender_address
from app.delivery.signing import DkimKey, DkimKeyError, load_dkim_key
from app.dns.resolver import TemporaryDnsError, TxtResolver
from app.dnscheck.model import Finding, Status, could_not_check
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.record import split_txt_strings
from app.tlsrpt.report import submitter_domain

KEY_BITS = 2048
_SELECTOR = re.compile(
    r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?)*\Z"
)


def dkim_name(selector: str, domain: str) -> str:
    """Where a DKIM key is published (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}."


def check_selector(selector: str) -> str:
    """A selector as DNS labels, lower-cased; ValueError naming the problem."""
    value = selector.strip().lower()
    if not _SELECTOR.match(value):
        raise ValueError(f"selector {selector!r} is not a sequence of DNS labels")
    return value


def public_key_der(private_pem: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER of a PEM private key (what `p=` carries)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def format_dkim_record(selector: str, domain: str, public_der: bytes) -> str:
    """The zone-file line of a DKIM key with the RFC 8460 service type `s=tlsrpt`."""
    value = "v=DKIM1; k=rsa; s=tlsrpt; p=" + base64.b64encode(public_der).decode("ascii")
    strings = " ".join(f'"{part}"' for part in split_txt_strings(value))
    return f"{dkim_name(selector, domain)} IN TXT {strings}"


def generate_key(domain: str, selector: str, out: Path) -> str:
    """Write a new RSA private key (PKCS#1 PEM, mode 0600) to `out`; return the DKIM
    record line. Raises FileExistsError for an existing file (never overwritten),
    ValueError for a bad domain or selector, OSError for a file that can not be made."""
    domain = normalise_domain(domain)
    selector = check_selector(selector)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # O_EXCL: refuse an existing file, even one that appears between check and write.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return format_dkim_record(selector, domain, public_key_der(pem))


def parse_dkim_tags(text: str) -> dict[str, str]:
    """The tag=value list of a DKIM key record (RFC 6376 §3.2); ValueError when broken."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ValueError(f"{part.strip()[:40]!r} is not tag=value")
        if name in tags:
            raise ValueError(f"tag {name}= appears twice")  # RFC 6376 §3.2
        tags[name] = "".join(value.split())
    return tags


async def check_published_key(resolver: TxtResolver, key: DkimKey) -> Finding:
    """Whether `<selector>._domainkey.<domain>` publishes the public half of `key`.

    `fail` for a missing, revoked, broken or different key, or a service type that
    excludes TLSRPT; `unknown` when DNS can not answer now; `ok` when it matches.
    """
    name = dkim_name(key.selector, key.domain)
    subject = name.rstrip(".")
    suggestion = format_dkim_record(key.selector, key.domain, public_key_der(key.private_key))
    try:
        answer = await resolver.resolve_txt(name)
    except TemporaryDnsError as exc:
        return could_not_check(subject, exc)
    records = [b"".join(strings).decode("latin-1") for strings in answer]
    keys = [r for r in records if "p=" in r]
    if not keys:
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message="no DKIM key is published: receivers can not verify report mail.",
            suggestion=suggestion,
        )
    if len(keys) > 1:
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message=f"{len(keys)} DKIM key records are published; publish exactly one.",
            suggestion=suggestion,
        )
    try:
        tags = parse_dkim_tags(keys[0])
        published = base64.b64decode(tags.get("p", ""), validate=True)
    except (ValueError, binascii.Error) as exc:
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message=f"the published DKIM record is broken: {exc}.",
            suggestion=suggestion,
        )
    if not published:
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message="the published DKIM key is revoked (empty p=).",
            suggestion=suggestion,
        )
    services = tags.get("s", "*").split(":")
    if "*" not in services and "tlsrpt" not in services:
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message=f"the DKIM record's service type s={tags['s']} excludes tlsrpt (RFC 8460 §3).",
            suggestion=suggestion,
        )
    if published != public_key_der(key.private_key):
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message="the published DKIM key does not match the configured private key "
            "(TLSRPT_DKIM__PRIVATE_KEY_FILE): signatures will not verify.",
            suggestion=suggestion,
        )
    return Finding(
        status=Status.OK,
        subject=subject,
        message="the published DKIM key matches the configured private key.",
    )


async def check_dkim(settings: Settings, resolver: TxtResolver) -> Finding:
    """The configured DKIM key: set, readable, and published unchanged in DNS.

    One finding: `ok` when DNS publishes the configured key; `fail` when no key is
    configured, the file is unusable, or DNS publishes none or another key; `unknown`
    when DNS can not answer now. (The dkim_mismatch alert, `app.alerts.conditions.DkimWatch`,
    calls `check_published_key` with the key the signer loaded: no key is no alert.)
    """
    try:
        domain = submitter_domain(settings.report.contact_info)
        key = load_dkim_key(domain, settings.dkim.selector, settings.dkim.private_key_file)
    except (ValueError, DkimKeyError) as exc:
        return Finding(
            status=Status.FAIL, subject="TLSRPT_DKIM__PRIVATE_KEY_FILE", message=f"{exc}."
        )
    if key is None:
        return Finding(
            status=Status.FAIL,
            subject="TLSRPT_DKIM__SELECTOR",
            message="no DKIM key is configured: mail reports are not sent; make one "
            "with `tlsrpt dkim-key generate`.",
        )
    return await check_published_key(resolver, key)


async def check_sending(settings: Settings, resolver: TxtResolver) -> list[Finding]:
    """The sending side: DKIM key configured, readable and published; From aligned."""
    try:
        domain = submitter_domain(settings.report.contact_info)
    except ValueError as exc:
        return [
            Finding(status=Status.FAIL, subject="TLSRPT_REPORT__CONTACT_INFO", message=f"{exc}.")
        ]
    return [await check_dkim(settings, resolver), _alignment(settings, domain)]


def _alignment(settings: Settings, dkim_domain: str) -> Finding:
    subject = "TLSRPT_MAIL__FROM"
    try:
        from_domain = sender_address(settings.mail.from_, settings.report.contact_info)
    except ValueError as exc:
        return Finding(status=Status.FAIL, subject=subject, message=f"no From address: {exc}.")
    from_domain = from_domain.rpartition("@")[2]
    if from_domain == dkim_domain:
        return Finding(
            status=Status.OK,
            subject=subject,
            message=f"the From domain {from_domain} is the DKIM signing domain.",
        )
    if from_domain.endswith("." + dkim_domain) or dkim_domain.endswith("." + from_domain):
        return Finding(
            status=Status.WARN,
            subject=subject,
            message=f"the From domain {from_domain} and the DKIM domain {dkim_domain} align "
            "only under relaxed DMARC alignment (RFC 7489 §3.1.1).",
        )
    return Finding(
        status=Status.FAIL,
        subject=subject,
        message=f"the From domain {from_domain} does not align with the DKIM signing domain "
        f"{dkim_domain} (the contact-info domain): DMARC checks of report mail fail.",
    )
