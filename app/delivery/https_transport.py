"""A one-request-per-connection HTTP/1.1 transport for httpx on asyncio streams and h11.

The HTTPS poster opens a new connection for every report (see `https.py`), so httpx's
default transport brings machinery it never uses here (a connection pool, anyio task
groups and cancel scopes, its own TLS stream over a memory BIO) and that machinery cost
as much CPU as the TLS handshake itself. This transport connects with asyncio's own TLS
to the address in the request URL, verifies the certificate for the `sni_hostname`
extension (else the URL host), speaks HTTP/1.1 through h11 (the protocol library under
httpcore), and closes the connection when the response is closed. Failures are raised
as httpx's exceptions (`ConnectError`, `ConnectTimeout`, `ReadTimeout`, ...), so callers
classify them exactly as with httpx's transport; redirects are returned, never followed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import h11
import httpx

_READ_BYTES = 64 * 1024


class OneShotTransport(httpx.AsyncBaseTransport):
    """Each request gets its own TLS connection, closed with its response."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._tls = tls

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        host = request.url.host
        server_name = str(request.extensions.get("sni_hostname") or host)
        connect = timeouts.get("connect")
        try:
            async with asyncio.timeout(connect):
                reader, writer = await asyncio.open_connection(
                    host,
                    request.url.port or 443,
                    ssl=self._tls,
                    server_hostname=server_name,
                    ssl_handshake_timeout=connect,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except OSError as exc:  # refused, unreachable, and ssl.SSLError (a subclass)
            raise httpx.ConnectError(str(exc), request=request) from None
        stream = _ResponseStream(reader, writer, timeouts.get("read"))
        try:
            await stream.send(request, timeouts.get("write"))
            response = await stream.receive_head()
        except BaseException:
            await stream.aclose()
            raise
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=stream,
            extensions={"http_version": b"HTTP/" + response.http_version},
            request=request,
        )


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, read: float | None
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._read_timeout = read
        self._h11 = h11.Connection(h11.CLIENT)

    async def send(self, request: httpx.Request, write: float | None) -> None:
        target = request.url.raw_path
        head = h11.Request(method=request.method, target=target, headers=request.headers.raw)
        data = self._h11.send(head) or b""
        body = request.content
        if body:
            data += self._h11.send(h11.Data(data=body)) or b""
        data += self._h11.send(h11.EndOfMessage()) or b""
        try:
            self._writer.write(data)
            async with asyncio.timeout(write):
                await self._writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending", request=request) from None
        except OSError as exc:
            raise httpx.WriteError(str(exc), request=request) from None

    async def _next_event(self) -> object:
        """The next h11 event (callers match it by type), reading as needed."""
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from None
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(self._read_timeout):
                    data = await self._reader.read(_READ_BYTES)
            except TimeoutError:
                raise httpx.ReadTimeout("timed out reading") from None
            except OSError as exc:
                raise httpx.ReadError(str(exc)) from None
            self._h11.receive_data(data)

    async def receive_head(self) -> h11.Response:
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 1xx: wait for the answer
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
            else:
                raise httpx.RemoteProtocolError(f"unexpected {type(event).__name__}")

    async def aclose(self) -> None:
        # A TLS close waits for the peer's close_notify; a receiver that never sends one
        # gets the read timeout, then the socket is dropped.
        self._writer.close()
        try:
            async with asyncio.timeout(self._read_timeout):
                await self._writer.wait_closed()
        except (TimeoutError, OSError):
            self._writer.transport.abort()
