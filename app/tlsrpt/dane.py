"""DANE TLSA matching (RFC 6698 §2.1, RFC 7672 §3), pure: does a certificate match a
record. The DNS check's probe uses it to say whether an MX host's certificate matches
the TLSA records it publishes at `_25._tcp.<host>`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# RFC 7672 §3.1: SMTP uses DANE-TA(2) and DANE-EE(3); PKIX-TA(0) and PKIX-EE(1) are
# not used for SMTP, and a probe that sees only the server's own certificate can check
# only end-entity records.
END_ENTITY_USAGES = frozenset({1, 3})
_DIGESTS = {1: "sha256", 2: "sha512"}


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    matching_type: int
    data: bytes

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.matching_type} {self.data.hex()}"


def tlsa_matches(record: Tlsa, certificate_der: bytes, spki_der: bytes) -> bool:
    """Whether an end-entity record matches the certificate (RFC 6698 §2.1.2, §2.1.3):
    selector 0 is the whole certificate, 1 its SubjectPublicKeyInfo; matching type 0 is
    the exact bytes, 1 SHA-256, 2 SHA-512. Unknown selectors and types match nothing."""
    if record.selector == 0:
        content = certificate_der
    elif record.selector == 1:
        content = spki_der
    else:
        return False
    if record.matching_type == 0:
        return content == record.data
    digest = _DIGESTS.get(record.matching_type)
    if digest is None:
        return False
    return hashlib.new(digest, content).digest() == record.data
