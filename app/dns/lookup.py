"""The `_smtp._tls.<domain>` TXT lookup of RFC 8460 §3 and its outcomes.

`lookup_tlsrpt` returns the domain's TLSRPT record or raises one outcome:
`NoRecordError` (NXDOMAIN, no TXT, no TXT that is TLSRPT), `MultipleRecordsError`,
`RecordSyntaxError` (the last two mean no record too, RFC 8460 §3), or
`TemporaryDnsError` (keep the data and ask again later). `lookup_many` does a day's
domains concurrently; the resolver bounds how many queries run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from app.dns.resolver import TemporaryDnsError, TxtResolver
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.record import (
    MultipleRecordsError,
    NoRecordError,
    RecordError,
    RecordSyntaxError,
    TlsrptRecord,
    select_record,
)

__all__ = [
    "LookupOutcome",
    "MultipleRecordsError",
    "NoRecordError",
    "RecordError",
    "RecordSyntaxError",
    "TemporaryDnsError",
    "lookup_many",
    "lookup_tlsrpt",
    "tlsrpt_name",
]

LookupOutcome = TlsrptRecord | RecordError | TemporaryDnsError


def tlsrpt_name(domain: str) -> str:
    """The name a policy domain publishes its TLSRPT record at (RFC 8460 §3)."""
    return f"_smtp._tls.{normalise_domain(domain)}."


async def lookup_tlsrpt(resolver: TxtResolver, domain: str) -> TlsrptRecord:
    """The TLSRPT record of `domain`, or one of the outcome errors above."""
    answer = await resolver.resolve_txt(tlsrpt_name(domain))
    return select_record(answer)


async def lookup_many(resolver: TxtResolver, domains: Iterable[str]) -> dict[str, LookupOutcome]:
    """Look up many domains at once; each maps to its record or its outcome error."""

    async def one(domain: str) -> LookupOutcome:
        try:
            return await lookup_tlsrpt(resolver, domain)
        except (RecordError, TemporaryDnsError) as exc:
            return exc

    names = list(dict.fromkeys(domains))
    outcomes = await asyncio.gather(*(one(domain) for domain in names))
    return dict(zip(names, outcomes, strict=True))
