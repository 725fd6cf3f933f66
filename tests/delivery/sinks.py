"""Real loopback servers that receive what the service delivers: an aiosmtpd SMTP sink
and an HTTPS receiver (uvicorn), each recording what arrived and answering as scripted."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.wait import until


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    authenticated: bool
    peer: tuple[str, int]


@dataclass
class SmtpHandler:
    """aiosmtpd handler: records messages; scripted replies are used up first."""

    messages: list[ReceivedMail] = field(default_factory=list)
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    # When set, DATA waits for it (a relay that stops answering); data_waiting tells.
    data_hook: asyncio.Event | None = None
    data_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    # Connections closed, by either side (the sink times idle clients out).
    connections_closed: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_hook is not None:
            self.data_waiting.set()
            await self.data_hook.wait()
            return "451 4.3.0 gave up waiting"
        if self.data_replies:
            return self.data_replies.pop(0)
        content = envelope.original_content
        assert isinstance(content, bytes) and envelope.mail_from is not None
        self.messages.append(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=content,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                authenticated=bool(session.authenticated),
                peer=session.peer,  # type: ignore[arg-type]
            )
        )
        return "250 2.0.0 queued as TEST"


class _SinkSmtp(SMTP):
    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.event_handler.connections_closed += 1


def password_authenticator(username: str, password: str) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(
            username.encode(), password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


@contextlib.asynccontextmanager
async def smtp_sink(
    handler: SmtpHandler,
    *,
    tls_context: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    authenticator: Callable[..., AuthResult] | None = None,
    idle_timeout: float = 300.0,
) -> AsyncIterator[int]:
    """Serve SMTP on 127.0.0.1 in the running loop; yields the port."""
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return _SinkSmtp(
            handler,
            hostname="sink.test",
            tls_context=None if implicit_tls else tls_context,
            require_starttls=tls_context is not None and not implicit_tls,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            auth_require_tls=True,
            timeout=idle_timeout,
        )

    server = await loop.create_server(
        protocol, "127.0.0.1", 0, ssl=tls_context if implicit_tls else None
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class ReceivedPost:
    path: str
    host: str
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HttpsReceiver:
    """An ASGI app recording POSTs; `statuses` are answered first, then 200."""

    posts: list[ReceivedPost] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    redirect_to: str | None = None

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = self.statuses.pop(0) if self.statuses else 200
        extra: list[tuple[bytes, bytes]] = []
        if self.redirect_to is not None:
            status = 307
            extra.append((b"location", self.redirect_to.encode()))
        elif status < 300:
            self.posts.append(
                ReceivedPost(
                    path=scope["path"],
                    host=headers.get("host", ""),
                    content_type=headers.get("content-type", ""),
                    body=body,
                    headers=headers,
                )
            )
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": f"status {status}\r\n".encode()})


@contextlib.asynccontextmanager
async def https_receiver(
    app: HttpsReceiver, cert_file: str, key_file: str, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve `app` over HTTPS with uvicorn on a loopback address; yields the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ssl_certfile=cert_file,
        ssl_keyfile=key_file,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started or task.done(), what="uvicorn started")
    if task.done():
        task.result()  # why it did not start
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()
