"""Normalisation of names and addresses at the edge (SPEC §3, RFC 8460 §4.4, §5.1).

Domains become lower-case IDNA A-labels without a trailing dot (RFC 8460 §4.4 asks for
A-labels in `policy-domain`; §5.1 for the file name). IP addresses become their canonical
text form. Each function raises ValueError with a short reason for the caller to report.
"""

from __future__ import annotations

import functools
import ipaddress
import re

_LDH_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_ASCII_FAST = re.compile(r"[a-z0-9._-]+\Z")


# A domain name in text, without its trailing dot (RFC 1035 §2.3.4: 255 octets on the
# wire).
MAX_DOMAIN_CHARS = 253


@functools.lru_cache(maxsize=65536)
def normalise_domain(value: str) -> str:
    """Return the lower-case A-label form of a domain name, or raise ValueError."""
    name = value.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty domain name")
    lowered = name.lower()
    if not _ASCII_FAST.match(lowered):
        try:
            # UTS 46 mapping, as browsers and MTAs do (`☺.example` -> `xn--74h.example`).
            lowered = ".".join(_to_alabel(label) for label in lowered.split("."))
        except UnicodeError as exc:
            raise ValueError(f"not a valid domain name: {exc}") from None
    if len(lowered) > MAX_DOMAIN_CHARS:
        raise ValueError(f"domain name longer than {MAX_DOMAIN_CHARS} characters")
    for label in lowered.split("."):
        if not _LDH_LABEL.match(label):
            raise ValueError(f"invalid label {label!r} in domain name")
    return lowered


def _to_alabel(label: str) -> str:
    if label.isascii():
        return label
    # The stdlib codec implements IDNA 2003 (nameprep), which maps the symbols and
    # compatibility characters that real recipient addresses contain.
    return label.encode("idna").decode("ascii")


@functools.lru_cache(maxsize=65536)
def normalise_ip(value: str) -> str:
    """Return the canonical text of an IPv4 or IPv6 address, or raise ValueError."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        # A zone (`fe80::1%eth0`) means nothing beyond the sender's host, and
        # PostgreSQL's inet refuses it.
        if address.scope_id is not None:
            raise ValueError(f"{value!r} has a zone index; not a global address")
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


@functools.lru_cache(maxsize=65536)
def normalise_mx_pattern(value: str) -> str:
    """An MTA-STS `mx` pattern: a domain, optionally with a `*.` wildcard (RFC 8461 §3.2)."""
    text = value.strip()
    if text.startswith("*."):
        return "*." + normalise_domain(text[2:])
    return normalise_domain(text)


def unicode_domain(domain: str) -> str | None:
    """The U-label form of an A-label domain, to show beside it; None when it is the same
    or an `xn--` label does not decode."""
    if "xn--" not in domain:
        return None
    try:
        labels = [
            label.encode("ascii").decode("idna") if label.startswith("xn--") else label
            for label in domain.split(".")
        ]
    except UnicodeError:
        return None
    text = ".".join(labels)
    return None if text == domain else text
