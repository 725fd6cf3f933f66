"""DKIM signing of report mails (RFC 8460 §3: reports by mail MUST be DKIM-signed).

dkimpy does the signing; it is the maintained Python DKIM implementation and has an
RFC 8460 mode (`tlsrpt=True`) that never emits `l=`. The signing domain is the submitter
domain (the contact-info domain), the selector and key come from settings. The private
key is read once at start-up; its bytes never reach a log line or an error message.

dkimpy computes the RSA signature itself with Python integers (`pow` on 2048-bit numbers,
about 10-20 ms a mail, most of a report mail's CPU). Everything DKIM stays with dkimpy
(canonicalisation, header selection, TLSRPT mode, the DKIM-Signature header); only the
RSASSA-PKCS1-v1_5 primitive is handed to OpenSSL through `cryptography` (under 1 ms). The
primitive is deterministic (RFC 8017 §8.2.1), so the signature is byte for byte the one
dkimpy would compute: the change is one of speed only, and a test holds it to that.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from app.delivery.mail import BounceTags

log = logging.getLogger(__name__)

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

    @property
    def tags(self) -> BounceTags:
        """The tags of bounce addresses and Message-IDs, keyed by this key."""
        return BounceTags.from_private_key(self.private_key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the public key as the DNS record's `p=` carries it (DER
        SubjectPublicKeyInfo), base64: tells which key signs without showing it."""
        public = serialization.load_pem_private_key(self.private_key, None).public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def load_dkim_key(domain: str, selector: str | None, key_file: Path | None) -> DkimKey | None:
    """The signing key, None when not configured, or DkimKeyError when unusable."""
    if not selector or key_file is None:
        return None
    try:
        pem = key_file.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"can not read DKIM key file {key_file}: {exc.strerror}") from None
    if not selector.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise DkimKeyError(f"DKIM selector {selector!r} is not a DNS label sequence")
    key = DkimKey(domain=domain, selector=selector, private_key=pem)
    try:
        sign_rsa_with_openssl(key)
    except (UnparsableKeyError, ValueError, TypeError, UnsupportedAlgorithm):
        raise DkimKeyError(f"DKIM key file {key_file} is not a PEM RSA private key") from None
    return key


# The OpenSSL form of each loaded key, by modulus: the key as dkimpy hands it to the RSA
# primitive is its own parse of the PEM (a dict of integers), and the modulus names it.
# Written only while keys are loaded at start-up.
_OPENSSL_KEYS: dict[int, rsa.RSAPrivateKey] = {}
_PREHASHED: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
# dkimpy's own primitive: used for any key not loaded here (and kept for the tests).
DKIMPY_RSA_SIGN = dkim.crypto.RSASSA_PKCS1_v1_5_sign


def _rsassa_pkcs1_v1_5_sign(hash: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's `RSASSA_PKCS1_v1_5_sign(hash, private_key)`, computed by OpenSSL."""
    key = _OPENSSL_KEYS.get(private_key["modulus"])
    algorithm = _PREHASHED.get(hash.name)
    if key is None or algorithm is None:
        return bytes(DKIMPY_RSA_SIGN(hash, private_key))
    try:
        # RFC 8017 §8.2.1 over dkimpy's header hash: EMSA-PKCS1-v1_5 of the digest, then RSA.
        return key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm()))
    except ValueError as exc:  # a modulus too short for the digest, as dkimpy reports it
        raise dkim.crypto.DigestTooLargeError(str(exc)) from None


def sign_rsa_with_openssl(key: DkimKey) -> None:
    """Have dkimpy's RSA signatures with this key computed by OpenSSL (called at start-up).

    dkimpy has no hook for its RSA primitive: `DKIM.gen_header` calls the module-level
    `dkim.RSASSA_PKCS1_v1_5_sign`, so that one attribute is replaced, once, here rather
    than at import time. The replacement signs with OpenSSL only for keys loaded here and
    passes every other key to dkimpy's own function, so any other user of dkimpy in the
    process gets the same bytes as before. Should a dkimpy release stop looking the
    primitive up there, nothing is replaced and signing stays correct, only slower.
    Raises UnparsableKeyError, ValueError, TypeError or UnsupportedAlgorithm for a key
    that is not an RSA private key both dkimpy and OpenSSL read.
    """
    parsed = parse_pem_private_key(key.private_key)
    openssl_key = serialization.load_pem_private_key(key.private_key, password=None)
    if not isinstance(openssl_key, rsa.RSAPrivateKey):
        raise TypeError("not an RSA private key")
    if openssl_key.private_numbers().public_numbers.n != parsed["modulus"]:
        raise ValueError("dkimpy and OpenSSL read different keys")
    _OPENSSL_KEYS[parsed["modulus"]] = openssl_key
    current = getattr(dkim, "RSASSA_PKCS1_v1_5_sign", None)
    if current is _rsassa_pkcs1_v1_5_sign:
        return
    if (
        current is DKIMPY_RSA_SIGN
        and "RSASSA_PKCS1_v1_5_sign" in dkim.DKIM.gen_header.__code__.co_names
    ):
        dkim.RSASSA_PKCS1_v1_5_sign = _rsassa_pkcs1_v1_5_sign
        return
    log.warning(
        "dkim_rsa_in_python",
        extra={"fields": {"reason": "this dkimpy version has no RSASSA_PKCS1_v1_5_sign to route"}},
    )


def openssl_signs(key: DkimKey) -> bool:
    """Whether dkimpy's signatures with `key` are computed by OpenSSL in this process."""
    return dkim.RSASSA_PKCS1_v1_5_sign is _rsassa_pkcs1_v1_5_sign and (
        parse_pem_private_key(key.private_key)["modulus"] in _OPENSSL_KEYS
    )


def sign_message(message: bytes, key: DkimKey) -> bytes:
    """Return the message with a DKIM-Signature header prepended.

    A plain function of bytes, so callers may run it in an executor. With a key from
    `load_dkim_key` (so the RSA is OpenSSL's) it costs about 2 ms, most of it dkimpy's
    canonicalisation and its parse of the key.
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
