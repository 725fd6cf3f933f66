"""`/healthz` (the process answers) and `/readyz` (database reachable and migrated)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.auth import get_resources
from app.api.errors import database_unavailable, error_response, responses
from app.db.migrate import current_heads

router = APIRouter(tags=["health"])


class Status(BaseModel):
    status: str


@router.get("/healthz", response_model=Status, summary="Liveness: the process answers")
async def healthz() -> Status:
    return Status(status="ok")


@router.get(
    "/readyz",
    response_model=Status,
    responses=responses(503),
    summary="Readiness: the database is reachable and migrated",
)
async def readyz(request: Request) -> Response | Status:
    resources = get_resources(request)
    try:
        # The pool's own wait (database.acquire_timeout_seconds) bounds the connection.
        async with asyncio.timeout(5):
            async with resources.pool.connection() as conn:
                heads = await current_heads(conn)
    except Exception as exc:  # any failure to reach the database means not ready
        resources.pool.outage.failed("readyz", exc)
        return database_unavailable()
    if heads != resources.expected_heads:
        return error_response(
            503,
            "not_migrated",
            "the database schema is not at the expected revision; run `tlsrpt migrate`",
        )
    return Status(status="ready")
