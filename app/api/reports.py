"""Reports API (scope `read`): preview, a day's listing, one report's JSON and its gzip.

Report bodies are returned as the exact bytes that are (or would be) sent, never
re-serialised. Where nothing would be sent, the answer is 404 with the reason code
(`no_record`, `no_usable_rua`, ...) as in the listing's `domains`. A rua of the record
that gets no report is named with its reason: `rua_not_used` in the listing, the
`X-Report-Rua-Not-Used` header (JSON) of the preview.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import get_resources, require_scope
from app.api.errors import ApiError, responses
from app.api.params import Day, DomainValue, RowId, domain_query
from app.dns.lookup import TemporaryDnsError
from app.report import service, views
from app.tokens.service import Scope

router = APIRouter(tags=["reports"], dependencies=[Depends(require_scope(Scope.READ))])

_JSON_BODY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The RFC 8460 §4.4 report, byte for byte as sent.",
        "content": {"application/json": {}},
    }
}


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rua: str
    kind: str = Field(description="`mailto` or `https`.")
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    sent_at: dt.datetime | None


class RuaNotUsedOut(BaseModel):
    rua: str = Field(description="The rua as the domain's record gives it.")
    reason: str = Field(
        description="Why no report goes there: a scheme other than mailto/https, an address "
        "or host that can not be used, or a suppression."
    )


class ReportOut(BaseModel):
    id: int = Field(description="Use with `GET /v1/reports/{id}`.")
    report_id: str = Field(description="RFC 8460 §4.4 `report-id`.")
    policy_domain: str
    state: str = Field(description="`built`; each rua's progress is in `deliveries`.")
    rua: list[str]
    filename: str = Field(description="RFC 8460 §5.1 file name of the gzip.")
    created_at: dt.datetime
    deliveries: list[DeliveryOut]
    rua_not_used: list[RuaNotUsedOut] = Field(
        default_factory=list,
        description="The record's rua this report is not sent to, with the reason "
        "(suppressed ones are the deliveries in state `suppressed`).",
    )


class DomainOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    policy_domain: str
    state: str = Field(
        description="`not_built` (results, no outcome yet: see the preview), `pending` "
        "(waiting for a DNS retry), `built`, `no_report` or `gave_up`."
    )
    reason: str | None = Field(
        default=None,
        description="Why no report: `no_record`, `multiple_records`, `syntax_error`, "
        "`no_usable_rua`, `only_report_delivery_results`, `success_only_day_disabled`, "
        "`dns_temporary_failure: ...`.",
    )
    detail: str | None = Field(default=None, description="The record's problem, in words.")
    attempts: int = 0
    next_attempt_at: dt.datetime | None = Field(
        default=None, description="Next DNS retry, for `pending`."
    )
    updated_at: dt.datetime | None = None


class DayReports(BaseModel):
    day: dt.date
    reports: list[ReportOut]
    domains: list[DomainOut] = Field(description="Every policy domain of the day, and why.")


@router.get(
    "/v1/reports/preview",
    summary="The exact report JSON that is (or would be) sent for a domain and day",
    response_class=Response,
    responses={**_JSON_BODY, **responses(401, 403, 404, 422, 503)},
)
async def preview(
    request: Request,
    policy_domain: Annotated[DomainValue, domain_query("The policy domain")],
    day: Annotated[Day, Query(description="The UTC day, YYYY-MM-DD.")],
) -> Response:
    domain = policy_domain
    res = get_resources(request)
    try:
        result = await views.preview_report(
            res.pool, res.resolver, res.settings.report, day, domain, now=res.clock()
        )
    except service.NoReportError as exc:
        details = [{"field": "reason", "reason": exc.reason}]
        if exc.detail:
            details.append({"field": "detail", "reason": exc.detail})
        raise ApiError(
            404,
            "no_report",
            f"no report would be sent for {domain} on {day}: {exc.reason}",
            details,
        ) from None
    except TemporaryDnsError as exc:
        raise ApiError(
            503,
            "dns_temporary_failure",
            f"the TLSRPT record of {domain} can not be looked up now: {exc}",
        ) from None
    headers = {"X-Report-Stored": "true" if result.stored else "false"}
    if result.not_used:
        # ASCII JSON: a header holds no raw non-ASCII or line breaks.
        headers["X-Report-Rua-Not-Used"] = json.dumps(
            [{"rua": u.rua, "reason": u.reason} for u in result.not_used], ensure_ascii=True
        )
    return Response(result.report_json, media_type="application/json", headers=headers)


@router.get(
    "/v1/reports",
    response_model=DayReports,
    summary="A day's built reports with their deliveries, and every domain's outcome",
    responses=responses(401, 403, 422),
)
async def list_reports(
    request: Request,
    day: Annotated[Day, Query(description="The UTC day, YYYY-MM-DD.")],
) -> DayReports:
    listing = await views.list_day(get_resources(request).pool, day)
    return DayReports(
        day=day,
        reports=[
            ReportOut(
                id=r.id,
                report_id=r.report_id,
                policy_domain=r.policy_domain,
                state="built",
                rua=r.rua,
                filename=r.filename,
                created_at=r.created_at,
                deliveries=[DeliveryOut.model_validate(d) for d in deliveries],
                rua_not_used=[
                    RuaNotUsedOut(rua=u.rua, reason=u.reason) for u in views.rua_not_used(r)
                ],
            )
            for r, deliveries in listing.reports
        ],
        domains=sorted(
            [DomainOut.model_validate(d) for d in listing.domains]
            + [DomainOut(policy_domain=d, state="not_built") for d in listing.not_built],
            key=lambda d: d.policy_domain,
        ),
    )


async def _stored(request: Request, report_pk: int) -> views.StoredReport:
    report = await views.get_report(get_resources(request).pool, report_pk)
    if report is None:
        raise ApiError(404, "not_found", f"no report with id {report_pk}")
    return report


@router.get(
    "/v1/reports/{report_pk}",
    summary="One built report's JSON, byte for byte as sent",
    response_class=Response,
    responses={**_JSON_BODY, **responses(401, 403, 404, 422)},
)
async def get_report(request: Request, report_pk: RowId) -> Response:
    report = await _stored(request, report_pk)
    return Response(report.report_json, media_type="application/json")


@router.get(
    "/v1/reports/{report_pk}/download",
    summary="One built report as the gzip file that is attached or POSTed (RFC 8460 §5)",
    response_class=Response,
    responses={
        200: {
            "description": "`application/tlsrpt+gzip`",
            "content": {"application/tlsrpt+gzip": {}},
        },
        **responses(401, 403, 404, 422),
    },
)
async def download_report(request: Request, report_pk: RowId) -> Response:
    report = await _stored(request, report_pk)
    return Response(
        report.report_gzip,
        media_type="application/tlsrpt+gzip",
        # The §5.1 name holds only A-labels, digits, "!" and ".": safe in a quoted string.
        headers={"Content-Disposition": f'attachment; filename="{report.filename}"'},
    )
