"""Alerts the service raised (scope `read`): newest first, open or all, by kind."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from app.alerts import service
from app.api.auth import get_resources, require_scope
from app.api.errors import responses
from app.tokens.service import Scope

router = APIRouter(tags=["alerts"], dependencies=[Depends(require_scope(Scope.READ))])

AlertKind = Literal[
    "incoming_failures",
    "outgoing_spike",
    "delivery_failed",
    "day_undelivered",
    "dkim_mismatch",
    "silence",
    "test",
]


class AlertOut(BaseModel):
    id: int
    kind: AlertKind
    subject: str = Field(description="A policy domain, a rua, a day; empty for the service.")
    summary: str
    details: dict[str, Any]
    raised_at: dt.datetime
    last_seen_at: dt.datetime = Field(
        description="When the condition was last seen; with `summary` and `details`, "
        "refreshed every 15 minutes while it holds."
    )
    resolved_at: dt.datetime | None = Field(description="null while the condition holds.")
    notified_at: dt.datetime | None = Field(description="When it went into a digest.")


class AlertList(BaseModel):
    alerts: list[AlertOut]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for the next page; null on the last page."
    )


@router.get(
    "/v1/alerts",
    response_model=AlertList,
    summary="Alerts, newest first",
    responses=responses(401, 403, 422),
)
async def list_alerts(
    request: Request,
    state: Annotated[Literal["open", "all"], Query(description="`open`: not resolved.")] = "all",
    kind: AlertKind | None = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    rows = await service.list_alerts(
        get_resources(request).pool,
        open_only=state == "open",
        kind=kind,
        before_id=before_id,
        limit=limit,
    )
    alerts = [AlertOut.model_validate(r, from_attributes=True) for r in rows]
    return AlertList(alerts=alerts, next_before_id=alerts[-1].id if len(alerts) == limit else None)
