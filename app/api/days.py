"""`GET /v1/days/{day}/results`: a day's aggregates in the RFC 8460 shape, per policy domain."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from app.api.auth import get_resources, require_scope
from app.api.errors import responses
from app.api.params import Day, DomainValue, domain_query
from app.ingest.service import day_aggregates
from app.tlsrpt.wire import format_policy
from app.tokens.service import Scope

router = APIRouter(tags=["results"])


class DomainResults(BaseModel):
    policy_domain: str = Field(alias="policy-domain")
    policies: list[dict[str, Any]] = Field(
        description="RFC 8460 §4.4 `policies` entries: `policy`, `summary`, `failure-details`."
    )


class DayResults(BaseModel):
    day: dt.date
    policy_domains: list[DomainResults] = Field(alias="policy-domains")


@router.get(
    "/v1/days/{day}/results",
    response_model=DayResults,
    response_model_by_alias=True,
    summary="A UTC day's aggregated results, as the reports will show them",
    dependencies=[Depends(require_scope(Scope.READ))],
    responses=responses(401, 403, 422),
)
async def get_day_results(
    request: Request,
    day: Day,
    policy_domain: Annotated[DomainValue | None, domain_query("Only this policy domain")] = None,
) -> DayResults:
    aggregates = await day_aggregates(
        get_resources(request).pool, day, None if policy_domain is None else [policy_domain]
    )
    grouped: dict[str, list[dict[str, Any]]] = {}
    for agg in aggregates:
        grouped.setdefault(agg.policy.policy_domain, []).append(format_policy(agg))
    return DayResults.model_validate(
        {
            "day": day,
            "policy-domains": [
                {"policy-domain": d, "policies": entries} for d, entries in grouped.items()
            ],
        }
    )
