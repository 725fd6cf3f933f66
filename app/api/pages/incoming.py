"""Incoming pages: received reports by sender and by our policy domain, a domain's
30-day chart and failures, one report with its DKIM verdict and raw JSON."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.auth import get_resources
from app.api.pages.charts import daily_chart
from app.api.pages.render import page, secure
from app.api.pages.session import viewer
from app.inbound import service as inbound
from app.inbound import views as inbound_views
from app.inbound.service import ReportFilter

router = APIRouter(include_in_schema=False)
CHART_DAYS = 30
PAGE_SIZE = 50


@router.get("/ui/incoming")
async def incoming(
    request: Request,
    organization: Annotated[str, Query(max_length=500)] = "",
    domain: Annotated[str, Query(max_length=253)] = "",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    since = resources.clock().date() - timedelta(days=CHART_DAYS - 1)
    where = ReportFilter(
        domain=domain.strip().lower() or None,
        organization=organization.strip() or None,
        before_id=before,
        limit=PAGE_SIZE + 1,
    )
    # Independent reads on separate pooled connections: the page waits for the slowest.
    async with asyncio.TaskGroup() as group:
        listed = group.create_task(inbound.list_reports(resources.pool, where))
        organizations = group.create_task(
            inbound_views.by_organization(resources.pool, since, limit=20)
        )
        domains = group.create_task(inbound_views.by_policy_domain(resources.pool, since, limit=20))
    reports = listed.result()
    return page(
        request,
        "incoming.html",
        who,
        section="incoming",
        since=since,
        organizations=organizations.result(),
        domains=domains.result(),
        reports=reports[:PAGE_SIZE],
        next_before=reports[PAGE_SIZE - 1]["id"] if len(reports) > PAGE_SIZE else None,
        organization=organization,
        domain=domain,
    )


@router.get("/ui/incoming/domains/{domain}")
async def incoming_domain(request: Request, domain: str) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    domain = domain.lower()
    last = resources.clock().date()
    days = [last - timedelta(days=CHART_DAYS - 1 - i) for i in range(CHART_DAYS)]
    entries = await inbound.summarize(resources.pool, domain, days[0], last)
    ok: dict[object, int] = defaultdict(int)
    bad: dict[object, int] = defaultdict(int)
    senders: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for entry in entries:
        ok[entry.day] += entry.successful_sessions
        bad[entry.day] += entry.failed_sessions
        totals = senders[entry.organization]
        totals[0] += entry.reports
        totals[1] += entry.successful_sessions
        totals[2] += entry.failed_sessions
    chart = daily_chart(
        f"Sessions reported for {domain}, last {CHART_DAYS} days",
        days,
        {
            "successful": ("ok", [ok[d] for d in days]),
            "failed": ("bad", [bad[d] for d in days]),
        },
    )
    return page(
        request,
        "incoming_domain.html",
        who,
        section="incoming",
        domain=domain,
        chart=chart,
        groups=await inbound_views.failure_groups(resources.pool, domain, days[0], last),
        senders=sorted(senders.items(), key=lambda kv: (-kv[1][2], kv[0])),
    )


@router.get("/ui/incoming/reports/{report_pk}")
async def incoming_report(request: Request, report_pk: int) -> Response:
    who = await viewer(request)
    found = await inbound.get_report(get_resources(request).pool, report_pk)
    if found is None:
        return page(request, "not_found.html", who, 404, what=f"received report {report_pk}")
    pretty = orjson.dumps(orjson.loads(found["report_json"]), option=orjson.OPT_INDENT_2).decode()
    return page(
        request, "incoming_report.html", who, section="incoming", report=found, pretty=pretty
    )


@router.get("/ui/incoming/reports/{report_pk}/raw")
async def incoming_report_raw(request: Request, report_pk: int) -> Response:
    await viewer(request)
    found = await inbound.get_report(get_resources(request).pool, report_pk)
    if found is None:
        return page(request, "not_found.html", None, 404, what=f"received report {report_pk}")
    return secure(
        Response(
            bytes(found["report_json"]),
            media_type="application/tlsrpt+json",
            headers={"Content-Disposition": f'attachment; filename="received-{report_pk}.json"'},
        )
    )
