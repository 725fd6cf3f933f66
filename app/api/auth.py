"""Bearer-token authentication with scopes, as a FastAPI dependency.

Missing or unknown token: 401 with `WWW-Authenticate: Bearer`; a valid token without
the needed scope: 403. `admin` implies every other scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ApiError
from app.resources import Resources
from app.tokens.service import Scope

_bearer = HTTPBearer(auto_error=False, description="A token from `tlsrpt token create`.")


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


BEARER_SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}]


async def authorize(request: Request, scope: Scope) -> None:
    """Raise 401/403 unless the request carries a valid token with `scope` (or admin).

    Hot endpoints call this directly (declaring `BEARER_SECURITY` for the docs): FastAPI's
    dependency machinery costs more per request than the check itself."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthenticated",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scopes = await get_resources(request).authenticator.scopes(token.strip())
    if scopes is None:
        raise ApiError(
            401,
            "unauthenticated",
            "the token is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if scope.value not in scopes and Scope.ADMIN.value not in scopes:
        raise ApiError(403, "forbidden", f"the token lacks the {scope.value!r} scope")


def require_scope(scope: Scope) -> Callable[..., Awaitable[None]]:
    async def check(
        request: Request,
        # Declared for the OpenAPI security scheme; `authorize` reads the header itself.
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        await authorize(request, scope)

    return check
