"""The hot routes (`POST /v1/results`, `POST /v1/tallies`) without FastAPI's per-request
layers.

A single result costs the server a few hundred microseconds, most of it not in the
route: route matching over every router, dependency solving (FastAPI reads the cookies
and query string of every request), the exception and exit-stack middleware. This ASGI
middleware sits inside `RequestContextMiddleware` (request id, metrics, the 500 of last
resort stay as they are) and calls the routes' own endpoint functions for exactly these
method and path pairs; everything else goes on to FastAPI. The routes stay declared on
`app.api.ingest.router`, so the OpenAPI document does not change, and the endpoints do
what they did: authenticate with `authorize`, read the body under its cap, answer with
the same `Response`. An exception is answered by the app's own exception handler for it
(the one FastAPI's `ExceptionMiddleware` would pick), and one without a handler
propagates to `RequestContextMiddleware` as before.

`tests/api/test_hot_path.py` compares each answer (success, 400, 401, 403, 409, 413,
422, 503) with FastAPI's for the same request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import ingest

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]

# The routes answered here: exactly these methods and paths, no path parameters.
HOT_PATHS = frozenset({"/v1/results", "/v1/tallies"})


def _hot_routes() -> dict[tuple[str, str], APIRoute]:
    routes = {}
    for route in ingest.router.routes:
        if isinstance(route, APIRoute) and route.path in HOT_PATHS:
            for method in route.methods or ():
                routes[(method, route.path)] = route
    return routes


class HotRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = _hot_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = (
            self.routes.get((scope["method"], scope["path"]))
            if scope["type"] == "http" and not scope.get("root_path")
            else None
        )
        if route is None:
            await self.app(scope, receive, send)
            return
        # As FastAPI's router would: the metrics label (RequestContextMiddleware) and
        # anything else reading the scope see the matched route.
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive)
        endpoint: Endpoint = route.endpoint
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Handler], exc: Exception) -> Handler | None:
    """The app's handler for `exc`: the first of its classes (most specific first) that
    has one, as Starlette's ExceptionMiddleware looks them up (a handler of `Exception`
    itself is ServerErrorMiddleware's, outside RequestContextMiddleware: not used here)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        if cls in handlers:
            return handlers[cls]
    return None
