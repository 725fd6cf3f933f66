"""The suppression list (scope `admin`): rua that get no reports, with expiry and comment.

A target is an email address, a `mailto:` URI or an `https:` URI; it is stored in the
normalised form delivery rows use, and a due delivery to it ends as `suppressed`.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from app.api.auth import get_resources, require_scope
from app.api.errors import ApiError, responses
from app.delivery import suppression
from app.delivery.suppression import SuppressionRow
from app.tokens.service import Scope

router = APIRouter(tags=["suppressions"], dependencies=[Depends(require_scope(Scope.ADMIN))])


def _text(value: Any) -> Any:
    if value is not None and not isinstance(value, str | dt.datetime):
        raise ValueError("an RFC 3339 date-time, as a string")  # not seconds since 1970
    return value


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("needs a time zone (for example 2026-12-31T00:00:00Z)")
    return value


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(
        max_length=2048,
        description="An email address, `mailto:` URI or `https:` URI.",
        examples=["tlsrpt@example.com"],
    )
    comment: str = Field(default="", max_length=suppression.MAX_COMMENT)
    expires_at: Annotated[dt.datetime | None, BeforeValidator(_text), AfterValidator(_aware)] = (
        Field(default=None, description="RFC 3339; null: until removed.")
    )


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    target: str = Field(description="Normalised as delivery rua are written.")
    comment: str
    expires_at: dt.datetime | None
    created_at: dt.datetime
    active: bool = Field(description="False once `expires_at` has passed.")
    source: Literal["operator", "bounces"] = Field(
        description="`operator`, or `bounces`: added because the rua's report mails "
        "bounced permanently on several days (see TLSRPT_BOUNCES__*)."
    )


class SuppressionList(BaseModel):
    suppressions: list[SuppressionOut]


def _out(row: SuppressionRow, now: dt.datetime) -> SuppressionOut:
    return SuppressionOut(
        id=row.id,
        target=row.target,
        comment=row.comment,
        expires_at=row.expires_at,
        created_at=row.created_at,
        active=row.expires_at is None or row.expires_at > now,
        source="bounces" if row.source == "bounces" else "operator",
    )


@router.get(
    "/v1/suppressions",
    response_model=SuppressionList,
    summary="Every suppression, active or expired",
    responses=responses(401, 403),
)
async def list_suppressions(request: Request) -> SuppressionList:
    resources = get_resources(request)
    rows = await suppression.list_suppressions(resources.pool)
    now = resources.clock()
    return SuppressionList(suppressions=[_out(r, now) for r in rows])


@router.post(
    "/v1/suppressions",
    response_model=SuppressionOut,
    status_code=201,
    summary="Suppress an address or URI (an existing entry gets the new comment and expiry)",
    responses=responses(401, 403, 422),
)
async def add_suppression(request: Request, body: SuppressionIn) -> SuppressionOut:
    resources = get_resources(request)
    try:
        row = await suppression.add_suppression(
            resources.pool,
            resources.clock,
            body.target,
            comment=body.comment,
            expires_at=body.expires_at,
        )
    except ValueError as exc:
        raise ApiError(
            422,
            "invalid_target",
            f"the target can not be suppressed: {exc}",
            [{"field": "target", "reason": str(exc)}],
        ) from None
    return _out(row, resources.clock())


@router.delete(
    "/v1/suppressions/{suppression_id}",
    status_code=204,
    summary="Remove a suppression",
    responses=responses(401, 403, 404, 422),
)
async def remove_suppression(request: Request, suppression_id: int) -> Response:
    if not await suppression.remove_suppression_by_id(get_resources(request).pool, suppression_id):
        raise ApiError(404, "not_found", f"no suppression with id {suppression_id}")
    return Response(status_code=204)
