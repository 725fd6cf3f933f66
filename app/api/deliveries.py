"""Delivery status (scope `read`): deliveries by state and day, a report's attempts.

Each delivery is one report to one rua. Its attempts say when each try started and
ended, how it ended (`sent`, `temporary`, `permanent`, `lease_expired`, and `bounced` or
`delayed` for a DSN that came back later), the SMTP reply code or HTTP status, and a short
excerpt of what the other side answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import get_resources, require_scope
from app.api.errors import ApiError, responses
from app.api.params import MAX_ID, Day, RowId
from app.delivery import service
from app.tokens.service import Scope

router = APIRouter(tags=["deliveries"], dependencies=[Depends(require_scope(Scope.READ))])

DeliveryState = Literal[
    "pending", "sending", "sent", "failed", "suppressed", "no_dkim_key", "disabled"
]


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(description="1 for the first attempt.")
    started_at: dt.datetime
    finished_at: dt.datetime
    outcome: str = Field(
        description="`sent`, `temporary`, `permanent` or `lease_expired`; a bounce (RFC 3464 "
        "DSN) that came back later adds `bounced` (permanent) or `delayed` (temporary)."
    )
    smtp_reply_code: int | None = Field(description="For mail: the relay's reply code.")
    http_status: int | None = Field(description="For https: the receiver's status.")
    reason: str | None
    excerpt: str | None = Field(description="The start of the reply, control characters removed.")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    report_pk: int = Field(description="The report's id, as in `GET /v1/reports/{id}`.")
    report_id: str = Field(description="RFC 8460 §4.4 `report-id`.")
    day: dt.date
    policy_domain: str
    rua: str
    kind: str = Field(description="`mailto` or `https`.")
    state: DeliveryState
    attempts: int
    next_attempt_at: dt.datetime = Field(description="Not tried before this (while pending).")
    first_attempt_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    sent_at: dt.datetime | None
    last_error: str | None


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class DeliveryWithAttempts(DeliveryOut):
    attempt_log: list[AttemptOut] = Field(description="Every attempt, oldest first.")


class ReportDeliveries(BaseModel):
    report_pk: int
    deliveries: list[DeliveryWithAttempts]


@router.get(
    "/v1/deliveries",
    response_model=DeliveryPage,
    summary="Deliveries, filtered by state and report day, in id order",
    responses=responses(401, 403, 422),
)
async def list_deliveries(
    request: Request,
    state: Annotated[DeliveryState | None, Query(description="Only this state.")] = None,
    day: Annotated[Day | None, Query(description="Only reports of this UTC day.")] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="Only ids after this one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveryPage:
    rows = await service.list_deliveries(
        get_resources(request).pool, state=state, day=day, after_id=after, limit=limit
    )
    return DeliveryPage(
        deliveries=[DeliveryOut.model_validate(r) for r in rows],
        next_after=rows[-1].id if len(rows) == limit else None,
    )


@router.get(
    "/v1/reports/{report_pk}/deliveries",
    response_model=ReportDeliveries,
    summary="A report's deliveries, each with all its attempts",
    responses=responses(401, 403, 404, 422),
)
async def report_deliveries(request: Request, report_pk: RowId) -> ReportDeliveries:
    found = await service.report_deliveries(get_resources(request).pool, report_pk)
    if found is None:
        raise ApiError(404, "not_found", f"no report with id {report_pk}")
    return ReportDeliveries(
        report_pk=report_pk,
        deliveries=[
            DeliveryWithAttempts(
                **DeliveryOut.model_validate(d).model_dump(),
                attempt_log=[AttemptOut.model_validate(a) for a in attempts],
            )
            for d, attempts in found
        ],
    )
