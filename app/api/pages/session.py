"""Web sessions: a signed cookie that names the token by its digest, and CSRF tokens.

Signing in with an API token sets one cookie, `tlsrpt_session`: HttpOnly (no script reads
it), `SameSite=Strict` (no other site's page sends it), path `/ui`, `Secure` on https (or
with `TLSRPT_UI__SECURE_COOKIE` behind a TLS proxy), signed with HMAC (itsdangerous)
under the session key. It holds the SHA-256 digest of the token, never the token, so a
stolen cookie is no bearer token for the API, and each request asks the token store for
the digest's scopes: revoking the token ends its sessions within the authenticator's
cache time. It also holds the expiry (from the injected clock, so tests move time
instead of waiting) and a random CSRF nonce that every form carries back in a hidden
field (synchroniser token); before signing in the cookie holds only the nonce, for the
sign-in form. Signing out records the nonce (it names the session) as ended until the
cookie's expiry, so a copy of the cookie taken before is refused too.

The key is `TLSRPT_UI__SESSION_KEY`, or else a random key the first instance stores in the
database (`tokens.service.session_key`), so every instance accepts every session and a
restart signs nobody out, with nothing to configure.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeSerializer

from app.api.auth import get_resources
from app.tokens import service as tokens
from app.tokens.service import Scope

COOKIE = "tlsrpt_session"
COOKIE_PATH = "/ui"
_SALT = "tlsrpt-ui-session"
# A sign-in form must be sent within this long after it was shown.
_FORM_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    csrf: str
    expires: float
    digest: bytes | None = None


@dataclass(frozen=True)
class Viewer:
    """A signed-in browser: what its token may do, and the CSRF token of its forms."""

    csrf: str
    admin: bool


class SignInRequiredError(Exception):
    """No valid session: the page redirects to the sign-in form."""


class ForbiddenError(Exception):
    """The session's token may not do this (a `read` token posting a change)."""


class CsrfError(Exception):
    """A form without its CSRF token, or with another session's."""


async def _serializer(request: Request) -> URLSafeSerializer:
    state = request.app.state
    cached: URLSafeSerializer | None = getattr(state, "ui_serializer", None)
    if cached is None:
        resources = get_resources(request)
        configured = resources.settings.ui.session_key
        if configured is not None:
            key = configured.get_secret_value().encode()
        else:
            key = await tokens.session_key(resources.pool, clock=resources.clock)
        cached = URLSafeSerializer(key, salt=_SALT)
        state.ui_serializer = cached
    return cached


def _now(request: Request) -> float:
    return get_resources(request).clock().timestamp()


async def read_session(request: Request) -> Session | None:
    """The request's valid, unexpired session cookie, or None."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = (await _serializer(request)).loads(raw)
        session = Session(
            csrf=str(data["x"]),
            expires=float(data["e"]),
            digest=bytes.fromhex(data["d"]) if data.get("d") else None,
        )
    except (BadSignature, KeyError, TypeError, ValueError):
        return None
    return session if session.expires > _now(request) else None


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


async def write_session(
    request: Request, response: Response, digest: bytes | None, nonce: str
) -> None:
    """Set the cookie: signed in as `digest`, or a pre-sign-in cookie for the form when
    None; `nonce` (fresh at each sign-in) is the CSRF token of its forms."""
    settings = get_resources(request).settings.ui
    seconds = settings.session_hours * 3600 if digest is not None else _FORM_SECONDS
    data: dict[str, object] = {"x": nonce, "e": _now(request) + seconds}
    if digest is not None:
        data["d"] = digest.hex()
    response.set_cookie(
        COOKIE,
        (await _serializer(request)).dumps(data),
        max_age=int(seconds),
        path=COOKIE_PATH,
        secure=settings.secure_cookie or request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


async def end_session(request: Request, response: Response, session: Session | None) -> None:
    """Sign out: the session is ended in the database and its cookie deleted."""
    if session is not None and session.digest is not None:
        resources = get_resources(request)
        expires_at = datetime.fromtimestamp(session.expires, UTC)
        await tokens.end_session(resources.pool, session.csrf, expires_at, clock=resources.clock)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


async def viewer(request: Request) -> Viewer:
    """The signed-in viewer (a `read` or `admin` token), else SignInRequiredError."""
    session = await read_session(request)
    if session is None or session.digest is None:
        raise SignInRequiredError
    resources = get_resources(request)
    if await tokens.session_ended(resources.pool, session.csrf):
        raise SignInRequiredError
    scopes = await resources.authenticator.scopes_of_digest(session.digest)
    if scopes is None or not scopes & {Scope.READ.value, Scope.ADMIN.value}:
        raise SignInRequiredError
    return Viewer(csrf=session.csrf, admin=Scope.ADMIN.value in scopes)


def check_csrf(expected: str, sent: str | None) -> None:
    if not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfError


async def admin(request: Request, form: dict[str, str]) -> Viewer:
    """The viewer of a form that changes something: CSRF checked first, then `admin`."""
    who = await viewer(request)
    check_csrf(who.csrf, form.get("csrf"))
    if not who.admin:
        raise ForbiddenError
    return who
