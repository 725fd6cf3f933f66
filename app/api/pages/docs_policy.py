"""A Content-Security-Policy for `/docs` and `/redoc` that keeps them on the service.

Their assets come from the service (fastapi-offline), but ReDoc's bundle still shows a
"by Redocly" logo from cdn.redoc.ly. This policy allows images only from the service, so
the browser never asks the internet for it (ReDoc hides the image when it fails). Their
HTML has inline scripts (FastAPI's page templates), hence 'unsafe-inline' here only; the
operator pages have the strict policy of `render.CSP`.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/redoc"})


class DocsPolicyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in DOCS_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", DOCS_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_policy)
