"""POSTs a gzip report to an `https:` rua (RFC 8460 §5.4), guarded against SSRF.

The rua comes from someone else's DNS, so the host is resolved here with the service's
resolver and every address is checked by `refusal_reason` (a pure decision) before any
connection: loopback, private, link-local, multicast, reserved and other non-public
addresses are refused unless an operator allow-list names their network. The connection
then goes to the address that passed the check, while TLS (SNI and certificate
verification) and the Host header still use the URL's name, so a second DNS answer
(rebinding) can not redirect it. Redirects are never followed. Requests are httpx's; they
go straight to an httpx transport (by default `OneShotTransport`, a new TLS connection
per request) whose `sni_hostname` request extension names the host to verify. `fetch`
GETs a small body under the same guard (the DNS check's MTA-STS policy, RFC 8461 §3.3).
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.config import HttpsSettings
from app.delivery.errors import PermanentDeliveryError, Receipt, TemporaryDeliveryError
from app.delivery.https_transport import OneShotTransport
from app.dns.resolver import TemporaryDnsError
from app.tlsrpt.names import normalise_domain

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONTENT_TYPE = "application/tlsrpt+gzip"
USER_AGENT = "tlsrpt-service/0.1 (RFC 8460 reporter)"
_EXCERPT_BYTES = 512
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressResolver(Protocol):
    """Resolves a host name to its addresses (A and AAAA), as text.

    Returns an empty list when the name has no address; raises TemporaryDnsError when DNS
    can not answer now (timeout, SERVFAIL). `app.dns.resolver.DnsResolver` is the real one.
    """

    async def resolve_addresses(self, host: str) -> list[str]: ...


def refusal_reason(address: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why a connection to `address` is refused, or None when it is permitted (pure)."""
    candidates: list[IPAddress] = []
    if isinstance(address, ipaddress.IPv6Address):
        # Addresses that carry an IPv4 address reach that address: judge it first.
        if address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            candidates.append(address.sixtofour)
        if address in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    candidates.append(address)
    for candidate in candidates:
        if any(candidate in network for network in allowed):
            return None
    for candidate in candidates:
        reason = _non_public(candidate)
        if reason is not None:
            return reason
    return None


def _non_public(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True, slots=True)
class HttpsTarget:
    """A validated `https:` rua: host (A-label or IP literal), port, path with query."""

    host: str
    port: int
    target: str
    address: IPAddress | None  # set when the URI names an IP literal

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def parse_https_rua(rua: str) -> HttpsTarget:
    """Validate an `https:` rua, or raise ValueError with the reason."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in rua):
        raise ValueError("rua contains spaces or control characters")
    parts = urlsplit(rua)
    if parts.scheme.lower() != "https":
        raise ValueError("rua is not an https: URI")
    if parts.username is not None or parts.password is not None:
        raise ValueError("rua carries user information")
    try:
        port = parts.port or 443
    except ValueError:
        raise ValueError("rua has an invalid port") from None
    host = parts.hostname or ""
    address: IPAddress | None = None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            host = normalise_domain(host)
        except ValueError as exc:
            raise ValueError(f"rua has an invalid host: {exc}") from None
    else:
        host = str(address)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return HttpsTarget(host=host, port=port, target=target, address=address)


def build_tls_context(settings: HttpsSettings) -> ssl.SSLContext:
    """httpx's default roots (certifi), the extra CA file, or no checks."""
    context = httpx.create_ssl_context(trust_env=False)
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    if not settings.verify_certificates:
        # RFC 8460 §5.4: the submitter MAY ignore certificate validation errors.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class HttpsPoster:
    """POSTs report bodies to https rua; one new connection per POST."""

    def __init__(
        self,
        settings: HttpsSettings,
        resolver: AddressResolver,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._allowed: tuple[IPNetwork, ...] = tuple(settings.allowed_networks)
        self._resolver = resolver
        if transport is None:
            # No keep-alive: a pooled connection is keyed by address only, and must never
            # carry a request for a name its certificate was not checked against.
            transport = OneShotTransport(build_tls_context(settings))
        # Requests go to the transport itself: an AsyncClient would only add what is not
        # wanted here (redirects, cookies, auth, proxies from the environment) and costs
        # a fifth of a POST's CPU. Its connect/read/write/pool timeouts, set per request:
        self._transport = transport
        self._timeouts = httpx.Timeout(settings.timeout_seconds).as_dict()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def check(self, rua: str) -> tuple[HttpsTarget, list[IPAddress]]:
        """Validate the rua and resolve it to permitted addresses; raise otherwise."""
        try:
            target = parse_https_rua(rua)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from None
        if target.address is not None:
            addresses = [target.address]
        else:
            try:
                answers = await self._resolver.resolve_addresses(target.host)
            except TemporaryDnsError as exc:
                raise TemporaryDeliveryError("DNS lookup failed", excerpt=str(exc)) from None
            addresses = _parse_addresses(answers)
            if not addresses:
                raise PermanentDeliveryError(f"{target.host} has no address")
        permitted = [a for a in addresses if refusal_reason(a, self._allowed) is None]
        if not permitted:
            refused = ", ".join(f"{a} ({refusal_reason(a, self._allowed)})" for a in addresses)
            raise PermanentDeliveryError(f"refused by the SSRF guard: {target.host} is {refused}")
        return target, permitted

    async def post(
        self,
        rua: str,
        body: bytes,
        *,
        content_type: str = CONTENT_TYPE,
        headers: dict[str, str] | None = None,
    ) -> Receipt:
        """Receipt on 2xx; TemporaryDeliveryError or PermanentDeliveryError otherwise.

        `content_type` and extra `headers` serve other POSTs under the same guard (the
        alert webhooks)."""
        target, addresses = await self.check(rua)
        sent = {"Content-Type": content_type, **(headers or {})}
        last_error: TemporaryDeliveryError | None = None
        for address in addresses:
            try:
                return await self._post_to(target, address, body, sent)
            except _ConnectFailed as exc:
                last_error = exc.error  # try the next permitted address
        assert last_error is not None
        raise last_error

    async def _post_to(
        self, target: HttpsTarget, address: IPAddress, body: bytes, headers: dict[str, str]
    ) -> Receipt:
        async with self._exchange("POST", target, address, body, headers) as response:
            excerpt = await _read_excerpt(response)
        return _classify(response.status_code, excerpt)

    @contextlib.asynccontextmanager
    async def _exchange(
        self,
        method: str,
        target: HttpsTarget,
        address: IPAddress,
        body: bytes,
        headers: dict[str, str],
    ) -> AsyncIterator[httpx.Response]:
        """One request to the checked `address`, TLS for the URI's name; transport
        failures become TemporaryDeliveryError (a failed connect as _ConnectFailed)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        extensions: dict[str, object] = {"timeout": self._timeouts}
        if target.address is None:
            # TLS for the name in the rua, on a connection to the checked address.
            extensions["sni_hostname"] = target.host
        request = httpx.Request(
            method,
            httpx.URL(f"https://{host}:{target.port}{target.target}"),
            content=body,
            headers={
                "Host": target.host_header,
                "User-Agent": USER_AGENT,
                # Only a short excerpt of the answer is read: nothing to inflate.
                "Accept-Encoding": "identity",
                "Connection": "close",
                **headers,
            },
            extensions=extensions,
        )
        try:
            # Never a redirect: the transport hands back whatever the receiver answered.
            response = await self._transport.handle_async_request(request)
            try:
                yield response
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _ConnectFailed(
                TemporaryDeliveryError(f"can not connect to {address}", excerpt=str(exc))
            ) from None
        except httpx.TimeoutException as exc:
            raise TemporaryDeliveryError("timed out", excerpt=type(exc).__name__) from None
        except httpx.TransportError as exc:
            raise TemporaryDeliveryError(
                "connection failed", excerpt=f"{type(exc).__name__}: {exc}"
            ) from None

    async def fetch(self, url: str, max_bytes: int) -> Fetched:
        """GET `url` under the same guard as a POST (for the DNS check's MTA-STS policy,
        RFC 8461 §3.3): no redirects followed, at most `max_bytes` read. Raises
        TemporaryDeliveryError or PermanentDeliveryError like `post`."""
        target, addresses = await self.check(url)
        last_error: TemporaryDeliveryError | None = None
        for address in addresses:
            try:
                async with self._exchange("GET", target, address, b"", {}) as response:
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            break
                return Fetched(
                    status=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    body=bytes(data[:max_bytes]),
                    too_large=len(data) > max_bytes,
                    address=str(address),
                )
            except _ConnectFailed as exc:
                last_error = exc.error
        assert last_error is not None
        raise last_error


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a GET answered: status, media type, the body up to the limit."""

    status: int
    content_type: str
    body: bytes
    too_large: bool
    address: str


def _parse_addresses(answers: Sequence[str]) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for text in answers:
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            continue  # not an address: nothing to connect to
    return addresses


class _ConnectFailed(Exception):
    def __init__(self, error: TemporaryDeliveryError) -> None:
        super().__init__(error.reason)
        self.error = error


async def _read_excerpt(response: httpx.Response) -> str:
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) >= _EXCERPT_BYTES:
            break
    return bytes(chunks[:_EXCERPT_BYTES]).decode("utf-8", errors="replace")


def _classify(status: int, excerpt: str) -> Receipt:
    text = f"HTTP {status} {excerpt}"
    if 200 <= status < 300:
        return Receipt(code=status, excerpt=text)
    if status in (408, 429) or status >= 500:
        raise TemporaryDeliveryError(f"receiver answered {status}", code=status, excerpt=text)
    if 300 <= status < 400:
        raise PermanentDeliveryError(
            f"receiver redirected ({status}); redirects are not followed",
            code=status,
            excerpt=text,
        )
    raise PermanentDeliveryError(f"receiver answered {status}", code=status, excerpt=text)
