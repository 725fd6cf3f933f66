"""Operator web pages under `/ui/`: server-rendered Jinja2, no CDN, no build step.

`install(app)` adds the page routes, the stylesheet and script under `/ui/static/`, and
the answers to a missing session (redirect to sign-in), a missing CSRF token and a
`read` token posting a change (403 pages). The pages call the areas' services only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.api.pages import dnscheck, incoming, operate, outgoing, signin
from app.api.pages.docs_policy import DocsPolicyMiddleware
from app.api.pages.render import page, secure
from app.api.pages.session import CsrfError, ForbiddenError, SignInRequiredError

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.include_router(signin.router)
    app.include_router(outgoing.router)
    app.include_router(incoming.router)
    app.include_router(operate.router)
    app.include_router(dnscheck.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(DocsPolicyMiddleware)

    @app.exception_handler(SignInRequiredError)
    async def _sign_in(request: Request, _: SignInRequiredError) -> Response:
        if request.method != "GET":
            return page(request, "refused.html", None, 403, why="You are not signed in.")
        return secure(RedirectResponse("/ui/signin", status_code=303))

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, _: CsrfError) -> Response:
        return page(
            request,
            "refused.html",
            None,
            403,
            why="The form did not carry this session's CSRF token. Reload the page and try again.",
        )

    @app.exception_handler(ForbiddenError)
    async def _forbidden(request: Request, _: ForbiddenError) -> Response:
        return page(
            request,
            "refused.html",
            None,
            403,
            why="Your token has the read scope: changes need a token with the admin scope.",
        )
