"""Where DKIM keys of incoming report mails come from: a `TxtLookup` for `dkimcheck`.

`resolver_key_lookup` adapts the service's resolver (anything with `resolve_txt`, as
`app.dns` provides): its answer is the key record, and any failure to get one is a
temporary error for the verdict, never a crash. `system_key_lookup` is dkimpy's own
resolver (the system's /etc/resolv.conf) run off the event loop: the fallback while a
process has no service resolver wired into its resources.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import dkim
from dkim.dnsplug import get_txt

from app.inbound.dkimcheck import KeyLookupError, TxtLookup


class TxtSource(Protocol):
    async def resolve_txt(self, name: str) -> list[tuple[bytes, ...]]:
        """TXT records of `name`, each as its character-strings; [] when none."""
        ...


def resolver_key_lookup(resolver: TxtSource) -> TxtLookup:
    async def lookup(name: str) -> bytes | None:
        try:
            records = await resolver.resolve_txt(name)
        except Exception as exc:  # the resolver's own temporary-failure errors
            raise KeyLookupError(str(exc)) from None
        # RFC 6376 §3.6.2.2: the strings of one record are concatenated.
        return b"".join(records[0]) if records else None

    return lookup


def system_key_lookup(timeout_seconds: float) -> TxtLookup:
    async def lookup(name: str) -> bytes | None:
        try:
            answer = await asyncio.to_thread(get_txt, name + ".", timeout_seconds)
        except dkim.DnsTimeoutError as exc:
            raise KeyLookupError(str(exc)) from None
        return answer if isinstance(answer, bytes) else None

    return lookup
