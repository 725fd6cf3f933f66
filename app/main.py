"""The FastAPI application: `create_app(settings, resources)`.

When `resources` is None the lifespan opens them from settings (the pool on
`database_url`); tests and the CLI usually pass ready resources. Routers come from
`app.api`; this module only assembles them with the middleware and error handlers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic.json_schema import models_json_schema

from app.api import (
    alerts,
    days,
    deliveries,
    dns,
    health,
    inbound,
    ingest,
    pages,
    reports,
    suppressions,
)
from app.api.auth import authorize
from app.api.errors import document_common_statuses, install_error_handlers
from app.api.hot import HotRoutes
from app.api.middleware import RequestContextMiddleware
from app.config import Settings
from app.resources import Resources, open_resources
from app.tokens.revocations import RevocationListener
from app.tokens.service import Scope

log = logging.getLogger(__name__)

VERSION = "0.1.0"
DESCRIPTION = """\
SMTP TLS Reporting (RFC 8460) for any MTA.

MTAs post the TLS outcome of their SMTP sessions to `POST /v1/results`; the service
aggregates them per UTC day and policy domain, and after each day sends RFC 8460 reports
to the `rua` of `_smtp._tls.<policy-domain>`.

Authenticate with `Authorization: Bearer <token>`; tokens and their scopes (`ingest`,
`read`, `admin`) are created with `tlsrpt token create`.
"""

Hook = Callable[[Resources], Awaitable[Any]]

# FastAPI's native OpenTelemetry (0.16x) asks the global OpenTelemetry providers whether
# they are configured on every request (environment reads: 6 % of the CPU of a single
# result). This service sets up no OpenTelemetry; it reports through /metrics and its
# JSON logs. Older FastAPI versions have no such option.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(
    settings: Settings,
    resources: Resources | None = None,
    *,
    database_url: str | None = None,
    on_start: list[Hook] | None = None,
) -> FastAPI:
    """Build the app. `on_start` hooks run in the lifespan (background tasks, listeners);
    each may return an async cleanup callable."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = resources is None
        res = resources
        if res is None:
            url = database_url or (
                settings.database_url.get_secret_value() if settings.database_url else None
            )
            if url is None:
                raise RuntimeError("create_app needs resources or a database URL")
            res = await open_resources(settings, url)
        app.state.resources = res
        cleanups = []
        # Every instance drops revoked tokens from its auth cache at once (LISTEN/NOTIFY).
        revocations = RevocationListener(res.pool, res.authenticator)
        revocations.start()
        cleanups.append(revocations.stop)
        try:
            for hook in on_start or []:
                cleanup = await hook(res)
                if cleanup is not None:
                    cleanups.append(cleanup)
            yield
        finally:
            for cleanup in reversed(cleanups):
                await cleanup()
            if own:
                await res.close()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the service itself
    # (the assets ship in the fastapi-offline package), so they work with no internet.
    app = FastAPIOffline(
        title="TLSRPT service",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        **_NO_TELEMETRY,
    )
    if resources is not None:
        app.state.resources = resources
    install_error_handlers(app)
    # Inside RequestContextMiddleware (added after it, so it wraps this one).
    app.add_middleware(HotRoutes)
    app.add_middleware(RequestContextMiddleware)

    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(days.router)
    app.include_router(reports.router)
    app.include_router(deliveries.router)
    app.include_router(suppressions.router)
    app.include_router(inbound.router)
    app.include_router(dns.router)
    app.include_router(alerts.router)
    pages.install(app)

    @app.get("/metrics", include_in_schema=False)
    async def _metrics(request: Request) -> Response:
        if settings.metrics.require_token:  # TLSRPT_METRICS__REQUIRE_TOKEN
            await authorize(request, Scope.METRICS)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    documented = list(ingest.DOCUMENTED_MODELS)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in documented],
                ref_template="#/components/schemas/{model}",
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                defs.get("$defs", {})
            )
            document_common_statuses(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
