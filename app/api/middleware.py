"""ASGI middleware: request id, metrics, and the last line of defence against 500s.

Pure ASGI (no BaseHTTPMiddleware) to keep the per-request cost low. An exception that
escapes a route is logged with its trace and answered with the error shape, the request
id and no trace.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.logs import request_id

log = logging.getLogger(__name__)


def _valid_request_id(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if 0 < len(text) <= 64 and text.replace("-", "").isalnum():
        return text
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = _valid_request_id(value)
        rid = rid or secrets.token_hex(8)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled_error", extra={"fields": {"path": scope.get("path")}})
            if not response_started:
                await _send_500(send, rid)
        finally:
            request_id.reset(token)
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            metrics.HTTP_LATENCY.labels(path).observe(time.perf_counter() - started)


async def _send_500(send: Send, rid: str) -> None:
    body = orjson.dumps(
        {
            "error": {
                "code": "internal_error",
                "message": f"internal error; quote request id {rid} to the operator",
                "details": [],
            }
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
