"""TLSA matching of a certificate (RFC 6698 §2.1)."""

from __future__ import annotations

import hashlib

from app.tlsrpt.dane import Tlsa, tlsa_matches

CERT = b"certificate DER"
SPKI = b"subject public key info DER"


def test_selectors_and_matching_types() -> None:
    assert tlsa_matches(Tlsa(3, 1, 1, hashlib.sha256(SPKI).digest()), CERT, SPKI)
    assert tlsa_matches(Tlsa(3, 0, 2, hashlib.sha512(CERT).digest()), CERT, SPKI)
    assert tlsa_matches(Tlsa(3, 0, 0, CERT), CERT, SPKI)
    assert not tlsa_matches(Tlsa(3, 1, 1, hashlib.sha256(CERT).digest()), CERT, SPKI)
    assert not tlsa_matches(Tlsa(3, 2, 1, hashlib.sha256(SPKI).digest()), CERT, SPKI)
    assert not tlsa_matches(Tlsa(3, 1, 3, SPKI), CERT, SPKI)
    assert Tlsa(3, 1, 1, b"\xab").to_text() == "3 1 1 ab"
