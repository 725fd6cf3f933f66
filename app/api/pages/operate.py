"""Deliveries (retry now, suppress a rua), suppressions, configuration.

Every change is a POST form with the session's CSRF token, allowed to `admin` tokens
only, and answered with a redirect (post/redirect/get) so a reload never posts again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import SecretStr

from app.api.auth import get_resources
from app.api.pages import session
from app.api.pages.render import page, read_form, secure
from app.api.pages.session import viewer
from app.delivery import service as delivery
from app.delivery import suppression
from app.delivery.senders import check_dkim_key
from app.delivery.signing import DkimKeyError

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 100
STATES = ["pending", "sending", "sent", "failed", "suppressed", "no_dkim_key", "disabled"]


def _back(to: str) -> Response:
    return secure(RedirectResponse(to, status_code=303))


@router.get("/ui/deliveries")
async def deliveries(
    request: Request,
    state: Annotated[
        str, Query(pattern="^(|pending|sending|sent|failed|suppressed|no_dkim_key|disabled)$")
    ] = "",
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    who = await viewer(request)
    pool = get_resources(request).pool
    rows = await delivery.list_deliveries(
        pool, state=state or None, after_id=after, limit=PAGE_SIZE + 1
    )
    return page(
        request,
        "deliveries.html",
        who,
        section="deliveries",
        state=state,
        states=STATES,
        counts=await delivery.count_deliveries(pool),
        rows=rows[:PAGE_SIZE],
        next_after=rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None,
        done=request.query_params.get("done", ""),
    )


@router.post("/ui/deliveries/{delivery_id}/retry")
async def retry(request: Request, delivery_id: int) -> Response:
    await session.admin(request, await read_form(request))
    resources = get_resources(request)
    if not await delivery.retry_now(resources.pool, resources.clock, delivery_id):
        return _back("/ui/deliveries?done=not-retried")
    return _back("/ui/deliveries?done=retried")


@router.get("/ui/suppressions")
async def suppressions(request: Request) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    rows = await suppression.list_suppressions(resources.pool)
    return page(
        request,
        "suppressions.html",
        who,
        section="suppressions",
        rows=rows,
        now=resources.clock(),
        problem=request.query_params.get("problem", ""),
        target=request.query_params.get("target", ""),
    )


@router.post("/ui/suppressions")
async def add_suppression(request: Request) -> Response:
    form = await read_form(request)
    await session.admin(request, form)
    resources = get_resources(request)
    expires_at = None
    try:
        if form.get("expires", "").strip():
            expires_at = datetime.fromisoformat(form["expires"].strip()).replace(tzinfo=UTC)
        await suppression.add_suppression(
            resources.pool,
            resources.clock,
            form.get("target", ""),
            comment=form.get("comment", "").strip(),
            expires_at=expires_at,
        )
    except ValueError as exc:
        who = await viewer(request)
        return page(
            request,
            "suppressions.html",
            who,
            422,
            section="suppressions",
            rows=await suppression.list_suppressions(resources.pool),
            now=resources.clock(),
            problem=f"Not added: {exc}",
            target=form.get("target", ""),
        )
    return _back("/ui/suppressions")


@router.post("/ui/suppressions/{suppression_id}/remove")
async def remove_suppression(request: Request, suppression_id: int) -> Response:
    await session.admin(request, await read_form(request))
    await suppression.remove_suppression_by_id(get_resources(request).pool, suppression_id)
    return _back("/ui/suppressions")


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}__{key.upper()}" if prefix else key.upper(), inner, out)
        return
    if isinstance(value, SecretStr):
        shown = "(set, hidden)"
    elif isinstance(value, list):
        shown = ", ".join(str(v) for v in value) or "(empty)"
    else:
        shown = "(unset)" if value is None else str(value)
    out.append(("TLSRPT_" + prefix, shown))


@router.get("/ui/config")
async def config(request: Request) -> Response:
    who = await viewer(request)
    settings = get_resources(request).settings
    values: list[tuple[str, str]] = []
    _flatten("", dict(settings.model_dump(mode="python")), values)
    dkim_problem = None
    fingerprint = None
    try:
        key = check_dkim_key(settings)
        fingerprint = key.fingerprint if key is not None else None
    except DkimKeyError as exc:
        dkim_problem = str(exc)
    return page(
        request,
        "config.html",
        who,
        section="config",
        settings=settings,
        values=values,
        fingerprint=fingerprint,
        dkim_problem=dkim_problem,
    )
