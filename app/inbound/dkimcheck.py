"""DKIM verdict of a received report mail (RFC 8460 §3, RFC 6376), with dkimpy.

dkimpy does the cryptography and canonicalisation (we never hand-roll either); its own
DNS code is not used. The caller supplies an async TXT lookup (the service passes one
backed by the project resolver, tests a fake that serves a test key): the key records
of every signature are fetched first, concurrently, and dkimpy then verifies against
those answers without any I/O of its own. dkimpy runs in RFC 8460 mode (`tlsrpt=True`):
keys restricted to the `tlsrpt` service are accepted and `l=` is not honoured.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from app.tlsrpt.text import display

# A report mail carries one signature, two when relayed; more is not worth the lookups.
MAX_SIGNATURES = 5

TxtLookup = Callable[[str], Awaitable[bytes | None]]
"""TXT record of a name (strings joined), None when there is none."""


class KeyLookupError(Exception):
    """A TXT lookup failed temporarily (timeout, SERVFAIL): raised by a TxtLookup."""


class DkimVerdict(StrEnum):
    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class DkimResult:
    verdict: DkimVerdict
    # The d= of the passing signature, else of the first signature; None when unsigned.
    domain: str | None = None
    reason: str | None = None


async def verify_dkim(raw: bytes, lookup: TxtLookup) -> DkimResult:
    """Verify the DKIM signatures of a mail; pass when any of them verifies."""
    try:
        verifier = dkim.DKIM(raw, logger=_quiet_logger(), tlsrpt=True)
    except dkim.DKIMException as exc:
        if b"dkim-signature" not in raw.lower():
            return DkimResult(DkimVerdict.NONE)
        return DkimResult(DkimVerdict.FAIL, reason=f"unreadable mail: {_reason(exc)}")
    signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
    if not signatures:
        return DkimResult(DkimVerdict.NONE)
    # Per signature: its d= and the key name dkimpy will ask for (`<s>._domainkey.<d>.`,
    # bytes, with the trailing dot); None for a signature too broken to name a key.
    named: list[tuple[str, bytes] | None] = []
    for value in signatures[:MAX_SIGNATURES]:
        try:
            tags = parse_tag_value(value)
            domain, selector = tags[b"d"].decode("ascii"), tags[b"s"].decode("ascii")
        except (InvalidTagValueList, KeyError, UnicodeDecodeError):
            named.append(None)
            continue
        named.append((domain.lower(), f"{selector}._domainkey.{domain}.".encode()))
    names = sorted({item[1] for item in named if item})
    fetched = await asyncio.gather(*(_fetch(lookup, n.decode()[:-1]) for n in names))
    answers = dict(zip(names, fetched, strict=True))
    first_failure: DkimResult | None = None
    for index, item in enumerate(named):
        result = _verify_one(verifier, index, item, answers)
        if result.verdict is DkimVerdict.PASS:
            return result
        first_failure = first_failure or result
    assert first_failure is not None
    return first_failure


async def _fetch(lookup: TxtLookup, name: str) -> bytes | KeyLookupError | None:
    try:
        return await lookup(name)
    except KeyLookupError as exc:
        return exc


def _verify_one(
    verifier: dkim.DKIM,
    index: int,
    named: tuple[str, bytes] | None,
    answers: dict[bytes, bytes | KeyLookupError | None],
) -> DkimResult:
    if named is None:
        return DkimResult(DkimVerdict.FAIL, None, "a signature without a readable d= or s=")
    domain, key_name = named
    answer = answers[key_name]
    if isinstance(answer, KeyLookupError):
        return DkimResult(DkimVerdict.TEMPERROR, domain, "key lookup failed temporarily")
    if answer is None:
        return DkimResult(DkimVerdict.FAIL, domain, "no key published for the signature")

    def served(name: bytes, timeout: float = 5) -> bytes | None:
        return answer if name == key_name else None

    try:
        ok = verifier.verify(index, dnsfunc=served)
    except dkim.DKIMException as exc:
        return DkimResult(DkimVerdict.FAIL, domain, _reason(exc))
    if ok:
        return DkimResult(DkimVerdict.PASS, domain)
    return DkimResult(DkimVerdict.FAIL, domain, "signature does not verify")


def _reason(exc: Exception) -> str:
    return display(str(exc), 200)


@functools.cache
def _quiet_logger() -> logging.Logger:
    # dkimpy logs message-controlled text at ERROR; our verdict carries the reason.
    logger = logging.getLogger("app.inbound.dkimpy")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger
