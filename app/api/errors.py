"""One error shape for every response, and the mapping of domain errors to status codes.

`{"error": {"code": "...", "message": "...", "details": [...]}}`. A database that is not
available now (refused, lost, shut down, no pooled connection within
`database.acquire_timeout_seconds`, serialization failure, deadlock) is a 503 with
`Retry-After` on every endpoint: nothing was committed, the client sends again. Other
unexpected exceptions become a 500 with the request id and no stack trace; the trace goes
to the log.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.db.outage import UNAVAILABLE
from app.ingest.service import (
    MAX_REPORTED_PROBLEMS,
    ClosedDayError,
    DayNotAcceptedError,
    IngestRefusedError,
    InvalidResultsError,
)

log = logging.getLogger(__name__)

# Seconds a client is asked to wait before sending again while the database is away: a
# restart takes a few; the pool reconnects in the background meanwhile.
RETRY_AFTER_SECONDS = 2


class ErrorDetail(BaseModel):
    index: int | None = None
    field: str | None = None
    reason: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raised by routes: becomes `status` with the error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def database_unavailable() -> Response:
    """The 503 for an outage: nothing was committed; send again after Retry-After."""
    return error_response(
        503,
        "database_unavailable",
        "the database is not available now; nothing was stored, send again later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return."""
    return {status: {"model": ErrorResponse} for status in statuses}


# Operations that never touch the database (no 503).
_NO_DATABASE = frozenset({"/healthz"})


def document_common_statuses(schema: dict[str, Any]) -> None:
    """Add to the OpenAPI document the statuses any operation can answer beyond its own:
    503 (database unavailable, with Retry-After) on every operation that uses the
    database, 400 (a body that can not be parsed) on every operation with a body."""
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    content = {"application/json": {"schema": error}}
    unavailable = {
        "description": "The database is not available now; nothing was stored.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before sending again.",
                "schema": {"type": "integer"},
            }
        },
        "content": content,
    }
    unparsable = {"description": "The body can not be parsed.", "content": content}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if path not in _NO_DATABASE:
                answers.setdefault("503", unavailable)
            if "requestBody" in operation:
                answers.setdefault("400", unparsable)
    defined = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    nested = defined.pop("$defs", {})
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in {**nested, "ErrorResponse": defined}.items():
        schemas.setdefault(name, definition)


def validation_details(errors: list[Any], *, skip: int = 0) -> list[dict[str, Any]]:
    """pydantic errors as {index, field, reason}; `skip` drops leading loc parts."""
    details = []
    for err in errors:
        loc = list(err.get("loc", ()))[skip:]
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        field = ".".join(str(part) for part in loc) or None
        reason = str(err.get("msg", "invalid"))
        if err.get("type") == "string_pattern_mismatch" and "\\x00" in str(
            err.get("ctx", {}).get("pattern", "")
        ):
            reason = "control characters are not allowed"
        details.append({"index": index, "field": field, "reason": reason})
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(IngestRefusedError)
    async def _ingest_refused(_: Request, exc: IngestRefusedError) -> Response:
        if isinstance(exc, ClosedDayError):
            days = ", ".join(d.isoformat() for d in exc.days)
            message = f"results for {days} are refused: the day's reports are already built"
            details = [
                {"field": "timestamp", "reason": f"day {d.isoformat()} is closed"} for d in exc.days
            ]
            return error_response(409, "day_closed", message, details)
        if isinstance(exc, InvalidResultsError):
            problems = exc.problems[:MAX_REPORTED_PROBLEMS]
            return error_response(422, "invalid_results", str(exc), problems)
        why = exc.why if isinstance(exc, DayNotAcceptedError) else str(exc)
        return error_response(422, "invalid_request", str(exc), [{"field": "day", "reason": why}])

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        return error_response(
            422,
            "invalid_request",
            "the request is invalid",
            validation_details(list(exc.errors()))[:100],
        )

    @app.exception_handler(UNAVAILABLE)
    async def _database_unavailable(request: Request, exc: Exception) -> Response:
        resources = getattr(request.app.state, "resources", None)
        if resources is not None:
            resources.pool.outage.failed("api", exc)  # logged once per outage
        return database_unavailable()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; a path served by
            # several routes (GET and POST) allows the methods of all of them.
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return error_response(exc.status_code, "http_error", str(exc.detail), headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """The methods some route (of any included router) fully matches for this path."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)
