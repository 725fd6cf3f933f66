"""The rua endpoint for reports others send us (RFC 8460 §5.3, §5.4), and its read API.

`POST /v1/tlsrpt/{token}` and `POST /v1/tlsrpt/{token}/mail` are the service's public
write endpoints: senders can not present a bearer token, so an unguessable path token
with the `inbound` scope identifies the receiver, and any other token is a 404. The body
is capped while it is read; gzip is capped while it inflates.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from app.api.auth import get_resources, require_scope
from app.api.body import read_body
from app.api.errors import ApiError, responses
from app.api.inbound_schemas import (
    InboundReport,
    InboundReportDetail,
    InboundReportList,
    InboundSummary,
    MailHandled,
    ReportAccepted,
    SenderDaySummary,
)
from app.api.params import MAX_ID, Day, RowId, domain_query
from app.inbound import service
from app.inbound.mail import NoReportError
from app.inbound.messages import receive_message
from app.inbound.service import ReportFilter
from app.resources import Resources
from app.tlsrpt.inflate import InflatedTooLargeError, InflateError
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.received import InvalidReportError, ReportTooLargeError
from app.tokens.service import Scope

router = APIRouter(tags=["incoming reports"])

REPORT_TYPES = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json"})
MAIL_TYPES = frozenset({"message/rfc822"})
# The summary covers this many days up to today when `from` is not given.
DEFAULT_SUMMARY_DAYS = 7
MAX_SUMMARY_DAYS = 366
_BINARY = {"type": "string", "format": "binary"}


async def _receiver(request: Request, token: str) -> Resources:
    """The resources, when `token` is an active token with the `inbound` scope."""
    resources = get_resources(request)
    scopes = await resources.authenticator.scopes(token)
    if scopes is None or Scope.INBOUND.value not in scopes:
        raise ApiError(404, "not_found", "no such report endpoint")
    return resources


def _media_type(request: Request, accepted: frozenset[str]) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in accepted:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send {' or '.join(sorted(accepted))}",
            [{"field": "Content-Type", "reason": f"{media or 'none'} is not accepted"[:200]}],
        )


async def _accept(request: Request, token: str, *, mail: bool) -> Response:
    """Store the body: a whole mail (RFC 8460 §5.3) or the report itself (§5.4)."""
    resources = await _receiver(request, token)
    _media_type(request, MAIL_TYPES if mail else REPORT_TYPES)
    settings, committer = resources.settings.inbound, resources.inbound_committer
    body = await read_body(request, settings.max_body_bytes)
    try:
        if mail:
            handled = await receive_message(
                committer,
                resources.resolver,
                resources.pool,
                resources.clock,
                body,
                inbound=settings,
                mail=resources.settings.mail,
                bounces=resources.settings.bounces,
                tags=resources.bounce_tags(),
            )
            if handled.receipt is None:
                # A bounce or an auto-reply: taken, nothing stored as a report.
                return Response(
                    MailHandled.of(handled).model_dump_json(),
                    status_code=202,
                    media_type="application/json",
                )
            receipt = handled.receipt
        else:
            receipt = await service.receive_report(committer, settings, body)
    except (InflatedTooLargeError, ReportTooLargeError) as exc:
        raise ApiError(413, "report_too_large", str(exc)) from None
    except InflateError as exc:
        raise ApiError(422, "invalid_report", f"the body is not readable: {exc.reason}") from None
    except NoReportError as exc:
        raise ApiError(422, "no_report", exc.reason) from None
    except InvalidReportError as exc:
        details = [{"field": p.path or None, "reason": p.reason} for p in exc.problems]
        raise ApiError(422, "invalid_report", f"not a TLSRPT report: {exc}", details) from None
    return Response(
        ReportAccepted.of(receipt).model_dump_json(),
        # A duplicate is acknowledged (RFC 8460 §5.4: 2xx), but nothing new was created.
        status_code=200 if receipt.duplicate else 201,
        media_type="application/json",
    )


@router.post(
    "/v1/tlsrpt/{token}",
    status_code=201,
    response_model=ReportAccepted,
    summary="Receive a TLSRPT report (the https rua endpoint)",
    description="RFC 8460 §5.4: the body is the report, `application/tlsrpt+gzip` or "
    "`application/tlsrpt+json`. `token` is a token with the `inbound` scope (`tlsrpt token "
    "create --scope inbound`); publish `rua=https://<host>/v1/tlsrpt/<token>`. 201 when "
    "stored, 200 when the same organization and report-id were already stored.",
    responses={
        200: {"model": ReportAccepted, "description": "A duplicate, stored once."},
        **responses(404, 413, 415, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": _BINARY} for t in sorted(REPORT_TYPES)},
        }
    },
)
async def post_report(request: Request, token: str) -> Response:
    return await _accept(request, token, mail=False)


@router.post(
    "/v1/tlsrpt/{token}/mail",
    status_code=201,
    response_model=ReportAccepted,
    summary="Receive a TLSRPT report mail (for an MTA pipe)",
    description="RFC 8460 §5.3: the whole RFC 5322 message as `message/rfc822`. The report "
    "part is found and read, and the DKIM verdict stored with it. The same endpoint takes "
    "what comes back to our own report mail (pipe the bounce addresses of "
    "TLSRPT_MAIL__BOUNCE_ADDRESS here too): a DSN (RFC 3464) is recorded on the delivery it "
    "names, an auto-reply (RFC 3834) is ignored; both get 202. A mail that is none of these "
    "gets 422.",
    responses={
        200: {"model": ReportAccepted, "description": "A duplicate, stored once."},
        202: {
            "model": MailHandled,
            "description": "Not a report: a bounce recorded (or, naming no delivery known "
            "here, dropped) or an auto-reply ignored.",
        },
        **responses(404, 413, 415, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"message/rfc822": {"schema": _BINARY}},
        }
    },
)
async def post_mail(request: Request, token: str) -> Response:
    return await _accept(request, token, mail=True)


def _domain(value: str, field: str) -> str:
    try:
        return normalise_domain(value)
    except ValueError as exc:
        raise ApiError(
            422, "invalid_request", f"invalid {field}", [{"field": field, "reason": str(exc)}]
        ) from None


@router.get(
    "/v1/inbound/reports",
    response_model=InboundReportList,
    summary="Received reports, newest first",
    dependencies=[Depends(require_scope(Scope.READ))],
    responses=responses(401, 403, 422),
)
async def list_reports(
    request: Request,
    domain: Annotated[str | None, domain_query("Reports with this policy domain")] = None,
    organization: Annotated[str | None, Query(description="Sending organization.")] = None,
    from_day: Annotated[Day | None, Query(alias="from")] = None,
    to_day: Annotated[Day | None, Query(alias="to")] = None,
    has_failures: bool | None = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Page: ids below this.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> InboundReportList:
    where = ReportFilter(
        domain=None if domain is None else _domain(domain, "domain"),
        organization=organization,
        from_day=from_day,
        to_day=to_day,
        has_failures=has_failures,
        before_id=before,
        limit=limit,
    )
    rows = await service.list_reports(get_resources(request).pool, where)
    reports = [InboundReport.model_validate(row) for row in rows]
    last = reports[-1].id if len(reports) == limit else None
    return InboundReportList(reports=reports, next_before=last)


@router.get(
    "/v1/inbound/reports/{report_pk}",
    response_model=InboundReportDetail,
    summary="One received report, with its original JSON",
    dependencies=[Depends(require_scope(Scope.READ))],
    responses=responses(401, 403, 404),
)
async def get_report(request: Request, report_pk: RowId) -> InboundReportDetail:
    row = await service.get_report(get_resources(request).pool, report_pk)
    if row is None:
        raise ApiError(404, "not_found", f"no received report with id {report_pk}")
    row["report"] = orjson.loads(row.pop("report_json"))
    return InboundReportDetail.model_validate(row)


@router.get(
    "/v1/inbound/summary",
    response_model=InboundSummary,
    response_model_by_alias=True,
    summary="Per day and sending organization: sessions, failures, MX hosts and IPs",
    dependencies=[Depends(require_scope(Scope.READ))],
    responses=responses(401, 403, 422),
)
async def get_summary(
    request: Request,
    domain: Annotated[str, domain_query("The policy domain (your domain)")],
    from_day: Annotated[Day | None, Query(alias="from")] = None,
    to_day: Annotated[Day | None, Query(alias="to")] = None,
) -> InboundSummary:
    resources = get_resources(request)
    policy_domain = _domain(domain, "domain")
    to_day = to_day or resources.clock().astimezone(dt.UTC).date()
    from_day = from_day or to_day - dt.timedelta(days=DEFAULT_SUMMARY_DAYS - 1)
    if from_day > to_day or (to_day - from_day).days >= MAX_SUMMARY_DAYS:
        raise ApiError(
            422,
            "invalid_request",
            f"`from` must not be after `to`, and the range at most {MAX_SUMMARY_DAYS} days",
        )
    entries = await service.summarize(resources.pool, policy_domain, from_day, to_day)
    return InboundSummary.model_validate(
        {
            "domain": policy_domain,
            "from": from_day,
            "to": to_day,
            "days": [SenderDaySummary.of(e) for e in entries],
        }
    )
