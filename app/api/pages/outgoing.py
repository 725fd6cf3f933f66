"""Overview and outgoing pages: today and yesterday at a glance, days, a day's policy
domains, one domain's policies, failure details, report and deliveries."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.alerts import service as alerts
from app.alerts.conditions import DKIM_MISMATCH
from app.api.auth import get_resources
from app.api.pages.render import page
from app.api.pages.session import viewer
from app.delivery import service as delivery
from app.delivery.senders import check_dkim_key
from app.delivery.signing import DkimKeyError
from app.dns.lookup import TemporaryDnsError
from app.inbound import views as inbound_views
from app.ingest import service as ingest
from app.ingest import views as ingest_views
from app.report import views as report_views
from app.report.service import NoReportError

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 100
TOP = 5
# The DNS page's check of the DKIM key and From alignment.
DNS_SENDING = "/ui/dns?sending=true"


@router.get("/")
async def root() -> Response:
    return Response(status_code=307, headers={"Location": "/ui/"})


def _dkim_problem(request: Request) -> str | None:
    try:
        key = check_dkim_key(get_resources(request).settings)
    except DkimKeyError as exc:
        return str(exc)
    return None if key is not None else "no DKIM key is configured: mail reports are not sent"


@router.get("/ui/")
async def overview(request: Request) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    pool = resources.pool
    today = resources.clock().date()
    yesterday = today - timedelta(days=1)
    week = today - timedelta(days=6)
    # Independent reads on separate pooled connections: the page waits for the slowest.
    async with asyncio.TaskGroup() as group:
        totals_rows = group.create_task(ingest_views.day_totals(pool, yesterday, today))
        top_today = group.create_task(ingest_views.top_failing(pool, today, TOP))
        top_yesterday = group.create_task(ingest_views.top_failing(pool, yesterday, TOP))
        counts_task = group.create_task(delivery.count_deliveries(pool))
        incoming_task = group.create_task(inbound_views.totals_since(pool, week))
        ours = group.create_task(
            inbound_views.by_policy_domain(pool, week, limit=TOP, failing_only=True)
        )
        outcomes_task = group.create_task(
            report_views.outcome_counts(pool, [yesterday, today - timedelta(days=2)])
        )
        alerts_task = group.create_task(alerts.open_counts(pool))
    counts, incoming, outcomes = (
        counts_task.result(),
        incoming_task.result(),
        outcomes_task.result(),
    )
    our_domains = ours.result()
    totals = {t.day: t for t in totals_rows.result()}
    days = [
        (day, totals.get(day) or ingest_views.DayTotals(day, 0, 0, 0), top.result())
        for day, top in ((today, top_today), (yesterday, top_yesterday))
    ]
    attention = []
    if counts.by_state.get("failed"):
        attention.append(
            (f"failed deliveries: {counts.by_state['failed']}", "/ui/deliveries?state=failed")
        )
    if outcomes.get("gave_up"):
        attention.append(
            (f"policy domains whose DNS lookups gave up: {outcomes['gave_up']}", "/ui/outgoing")
        )
    if not resources.settings.send_reports:
        attention.append(("sending is switched off (TLSRPT_SEND_REPORTS=false)", "/ui/config"))
    dkim = _dkim_problem(request)
    if dkim:
        attention.append((dkim, "/ui/config"))
    if alerts_task.result().get(DKIM_MISMATCH):
        attention.append(
            ("DNS does not publish the DKIM key report mail is signed with", DNS_SENDING)
        )
    if incoming.failed:
        attention.append(
            (f"failed sessions to our domains in 7 days: {incoming.failed}", "/ui/incoming")
        )
    return page(
        request,
        "overview.html",
        who,
        section="overview",
        days=days,
        deliveries=counts,
        incoming=incoming,
        our_domains=our_domains,
        attention=attention,
    )


@router.get("/ui/outgoing")
async def outgoing_days(request: Request) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    today = resources.clock().date()
    first = today - timedelta(days=resources.settings.retention.results_days)
    days = await ingest_views.day_totals(resources.pool, first, today)
    return page(request, "outgoing_days.html", who, section="outgoing", days=days)


@router.get("/ui/outgoing/{day}")
async def outgoing_day(
    request: Request,
    day: date,
    q: Annotated[str, Query(max_length=253)] = "",
    failing: Annotated[bool, Query()] = False,
    order: Annotated[str, Query(pattern="^(name|failures)$")] = "name",
    after: Annotated[str, Query(max_length=253)] = "",
    page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
) -> Response:
    who = await viewer(request)
    pool = get_resources(request).pool
    # By name: keyset pages (`after`, fast at any depth); by failures: numbered pages.
    by_failures = order == "failures"
    rows = await ingest_views.domain_totals(
        pool,
        day,
        contains=q.strip().lower() or None,
        failing_only=failing,
        by_failures=by_failures,
        after=None if by_failures else after or None,
        offset=(page_no - 1) * PAGE_SIZE if by_failures else 0,
        limit=PAGE_SIZE + 1,
    )
    outcomes = await report_views.domain_outcomes(pool, day, [r.policy_domain for r in rows])
    return page(
        request,
        "outgoing_day.html",
        who,
        section="outgoing",
        day=day,
        rows=rows[:PAGE_SIZE],
        outcomes=outcomes,
        q=q,
        failing=failing,
        order=order,
        page_no=page_no if by_failures else None,
        after=after,
        next_after=rows[PAGE_SIZE - 1].policy_domain if len(rows) > PAGE_SIZE else None,
    )


@router.get("/ui/outgoing/{day}/{policy_domain}")
async def outgoing_domain(request: Request, day: date, policy_domain: str) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    domain = policy_domain.lower()
    aggregates = await ingest.day_aggregates(resources.pool, day, [domain])
    outcome = (await report_views.domain_outcomes(resources.pool, day, [domain])).get(domain)
    preview: str | None = None
    why_none: str | None = None
    try:
        found = await report_views.preview_report(
            resources.pool, resources.resolver, resources.settings.report, day, domain
        )
        preview = orjson.dumps(orjson.loads(found.report_json), option=orjson.OPT_INDENT_2).decode()
        stored = found.stored
    except NoReportError as exc:
        why_none, stored = str(exc), False
    except TemporaryDnsError as exc:
        why_none, stored = f"DNS can not tell now: {exc}", False
    deliveries = []
    if outcome is not None and outcome.report_pk is not None:
        deliveries = await delivery.report_deliveries(resources.pool, outcome.report_pk) or []
    if not aggregates and outcome is None:
        return page(request, "not_found.html", who, 404, what=f"{domain} on {day}")
    return page(
        request,
        "outgoing_domain.html",
        who,
        section="outgoing",
        day=day,
        domain=domain,
        aggregates=aggregates,
        outcome=outcome,
        preview=preview,
        stored=stored,
        why_none=why_none,
        deliveries=deliveries,
    )
