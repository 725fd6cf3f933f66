"""Templates, the security headers of every page, and reading a posted form.

Pages are Jinja2 templates shipped in the package (autoescaped). Every HTML answer
carries a strict Content-Security-Policy: scripts, styles and images only from the
service itself, no inline script or style, forms only to the service, no framing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from app.api.pages.session import CsrfError, Viewer

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MAX_FORM_BYTES = 16 * 1024

_env = Environment(
    loader=PackageLoader("app.api.pages", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


_env.filters["percent"] = _percent
_env.filters["thousands"] = lambda n: f"{n:,}".replace(",", " ")


def secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def page(
    request: Request,
    template: str,
    viewer: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    html = _env.get_template(template).render(
        viewer=viewer, path=request.url.path, section=context.pop("section", ""), **context
    )
    return secure(HTMLResponse(html, status_code=status_code))  # type: ignore[return-value]


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last of each name); CsrfError for anything else,
    so a cross-site multipart or JSON post is refused like a missing token."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise CsrfError
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise CsrfError
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
    return {name: values[-1] for name, values in fields.items()}
