"""DKIM keys of incoming report mails come from the service's own resolver.

`resolver_key_lookup` adapts `app.dns` (the configured nameservers, timeout, cache) to
the `TxtLookup` that `dkimcheck` asks: the first TXT record at the key's name, its
strings joined (RFC 6376 §3.6.2.2), None when there is none, and a temporary DNS
failure as `KeyLookupError` (verdict `temperror`, never a crash).
"""

from __future__ import annotations

from app.dns.resolver import TemporaryDnsError, TxtResolver
from app.inbound.dkimcheck import KeyLookupError, TxtLookup


def resolver_key_lookup(resolver: TxtResolver) -> TxtLookup:
    async def lookup(name: str) -> bytes | None:
        try:
            records = await resolver.resolve_txt(name)
        except TemporaryDnsError as exc:
            raise KeyLookupError(str(exc)) from None
        return b"".join(records[0]) if records else None

    return lookup
