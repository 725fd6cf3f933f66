"""An async stub resolver on dnspython with the service's limits.

Nameservers come from `TLSRPT_DNS__NAMESERVERS` (`IP`, `IP:PORT`, `[v6]:PORT`), or the
system's /etc/resolv.conf when unset. Every query is bounded by the configured timeout,
at most `max_concurrency` run at once (a day's build looks up thousands of domains), and
answers are kept for at most `cache_seconds` (never longer than their TTL). Failures are
sorted into what callers need: an empty answer (NXDOMAIN, no data: the name has nothing)
or `TemporaryDnsError` (SERVFAIL, REFUSED, timeout, network error: ask again later).
`lookup` (for the DNS check) asks without the cache, with the AD bit set in the query
(RFC 6840 §5.7), and says whether the resolver vouched for the answer with DNSSEC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver

from app.config import DnsSettings, split_nameserver

_MAX_CACHE_ENTRIES = 100_000

TxtAnswer = list[tuple[bytes, ...]]


class TemporaryDnsError(Exception):
    """The DNS did not answer usefully now (SERVFAIL, timeout, ...): try again later."""


class TxtResolver(Protocol):
    """What report building needs from DNS; tests pass a fake with the same method."""

    async def resolve_txt(self, name: str) -> TxtAnswer:
        """TXT records of `name`, each as its character-strings; [] when there are none."""
        ...


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """An uncached answer: its records ([] for NXDOMAIN or no data) and whether the
    resolver set the AD bit (RFC 4035 §3.2.3: it validated the answer with DNSSEC)."""

    records: list[dns.rdata.Rdata]
    authenticated: bool


def parse_nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` (validated by DnsSettings) to a nameserver."""
    host, port = split_nameserver(entry)
    return dns.nameserver.Do53Nameserver(host, int(port) if port else 53)


class DnsResolver:
    """The service's resolver; open one per process and share it."""

    def __init__(
        self, settings: DnsSettings, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [parse_nameserver(entry) for entry in settings.nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                # No /etc/resolv.conf (minimal containers): a local resolver is the only
                # sensible guess; TLSRPT_DNS__NAMESERVERS overrides it.
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = ["127.0.0.1"]
        resolver.lifetime = settings.timeout_seconds
        resolver.timeout = min(resolver.timeout, settings.timeout_seconds)
        resolver.cache = None  # our own cache below caps TTLs at cache_seconds
        self._resolver = resolver
        self._limit = asyncio.Semaphore(settings.max_concurrency)
        self._cache_seconds = settings.cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, list[dns.rdata.Rdata]]] = {}
        self._monotonic = monotonic

    @property
    def nameservers(self) -> list[str]:
        """The servers asked, as text (`IP` or `IP:PORT`), to name them in a report."""
        names = []
        for server in self._resolver.nameservers:
            if isinstance(server, dns.nameserver.Do53Nameserver) and server.port != 53:
                address = f"[{server.address}]" if ":" in server.address else server.address
                names.append(f"{address}:{server.port}")
            else:
                names.append(str(server))
        return names

    async def lookup(self, name: str, rdtype: str) -> DnsAnswer:
        """Records of one type, asked now (no cache), with the AD bit requested.

        Raises TemporaryDnsError as the other lookups do.
        """
        async with self._limit:
            records, _, authenticated = await self._resolve(
                name.lower().rstrip("."), dns.rdatatype.from_text(rdtype), ad=True
            )
        return DnsAnswer(records, authenticated)

    async def resolve_txt(self, name: str) -> TxtAnswer:
        records = await self._query(name, dns.rdatatype.TXT)
        return [tuple(rdata.strings) for rdata in records]  # type: ignore[attr-defined]

    async def resolve_addresses(self, host: str) -> list[str]:
        """A and AAAA addresses of `host` (for https rua delivery); [] when none."""
        v4, v6 = await asyncio.gather(
            self._query(host, dns.rdatatype.A), self._query(host, dns.rdatatype.AAAA)
        )
        return [rdata.to_text() for rdata in (*v4, *v6)]

    async def _query(self, name: str, rdtype: int) -> list[dns.rdata.Rdata]:
        key = (name.lower().rstrip("."), rdtype)
        cached = self._cache.get(key)
        now = self._monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._limit:
            records, ttl = await self._ask(key[0], rdtype)
        self._remember(key, records, min(ttl, self._cache_seconds))
        return records

    async def _ask(self, name: str, rdtype: int) -> tuple[list[dns.rdata.Rdata], int]:
        records, ttl, _ = await self._resolve(name, rdtype, ad=False)
        return records, ttl

    async def _resolve(
        self, name: str, rdtype: int, *, ad: bool
    ) -> tuple[list[dns.rdata.Rdata], int, bool]:
        """(records, ttl, AD bit of the response)."""
        resolver = self._resolver
        if ad:
            # A copy that sets AD in the query: a validating resolver then says whether
            # it validated the answer (RFC 6840 §5.7), without DO and its signatures.
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = self._resolver.nameservers
            resolver.lifetime, resolver.timeout = self._resolver.lifetime, self._resolver.timeout
            resolver.cache = None
            resolver.flags = dns.flags.RD | dns.flags.AD
        try:
            qname = dns.name.from_text(name)
            answer = await resolver.resolve(qname, dns.rdatatype.RdataType(rdtype), search=False)
        except dns.resolver.NXDOMAIN as exc:
            qnames = exc.qnames()  # type: ignore[no-untyped-call]
            response = exc.response(qnames[0]) if qnames else None  # type: ignore[no-untyped-call]
            return [], self._cache_seconds, _authenticated(response)
        except (dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return [], self._cache_seconds, False
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
            return [], self._cache_seconds, False  # a name that can not exist has no records
        except dns.resolver.NoNameservers as exc:
            raise TemporaryDnsError(f"{name}: no nameserver answered ({_short(exc)})") from None
        except dns.exception.Timeout:
            raise TemporaryDnsError(f"{name}: timed out") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise TemporaryDnsError(f"{name}: {type(exc).__name__}: {_short(exc)}") from None
        rrset = answer.rrset
        if rrset is None:
            return [], self._cache_seconds, _authenticated(answer.response)
        return list(rrset), rrset.ttl, _authenticated(answer.response)

    def _remember(self, key: tuple[str, int], records: list[dns.rdata.Rdata], ttl: int) -> None:
        if ttl <= 0:
            return
        now = self._monotonic()
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= _MAX_CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]  # oldest first
        self._cache[key] = (now + ttl, records)


def _authenticated(response: object) -> bool:
    flags = getattr(response, "flags", 0)
    return bool(flags & dns.flags.AD)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."
