"""Sign-in with an API token (`read` or `admin`), and sign-out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.auth import get_resources
from app.api.pages import session
from app.api.pages.render import page, read_form, secure
from app.tokens.service import Scope, hash_token

router = APIRouter(include_in_schema=False)


async def _form(request: Request, problem: str | None = None, status: int = 200) -> Response:
    nonce = session.new_nonce()
    response = page(request, "signin.html", None, status_code=status, problem=problem, csrf=nonce)
    await session.write_session(request, response, None, nonce)
    return response


@router.get("/ui/signin")
async def signin_form(request: Request) -> Response:
    return await _form(request)


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    form = await read_form(request)
    current = await session.read_session(request)
    session.check_csrf(current.csrf if current else "", form.get("csrf"))
    token = form.get("token", "").strip()
    scopes = await get_resources(request).authenticator.scopes(token) if token else None
    if scopes is None:
        return await _form(request, "That token is unknown or revoked.", 401)
    if not scopes & {Scope.READ.value, Scope.ADMIN.value}:
        return await _form(request, "That token has neither the read nor the admin scope.", 403)
    response = secure(RedirectResponse("/ui/", status_code=303))
    await session.write_session(request, response, hash_token(token), session.new_nonce())
    return response


@router.post("/ui/signout")
async def signout(request: Request) -> Response:
    form = await read_form(request)
    current = await session.read_session(request)
    session.check_csrf(current.csrf if current else "", form.get("csrf"))
    response = secure(RedirectResponse("/ui/signin", status_code=303))
    await session.end_session(request, response, current)
    return response
