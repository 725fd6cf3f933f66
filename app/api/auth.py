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


def require_scope(scope: Scope) -> Callable[..., Awaitable[None]]:
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(
                401,
                "unauthenticated",
                "a bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scopes = await get_resources(request).authenticator.scopes(credentials.credentials)
        if scopes is None:
            raise ApiError(
                401,
                "unauthenticated",
                "the token is unknown or revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope.value not in scopes and Scope.ADMIN.value not in scopes:
            raise ApiError(403, "forbidden", f"the token lacks the {scope.value!r} scope")

    return check
