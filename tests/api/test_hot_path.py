"""The hot routes (`app/api/hot.py`) answer exactly as FastAPI's routing of the same
endpoints does, and as the contract says: status, headers, error shape.

Each request goes to two apps on the same resources: the app as served (the hot path
answers) and one whose hot path is switched off (FastAPI routes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from app.api import hot
from app.api.errors import ErrorResponse
from app.ingest.service import close_day
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope as TokenScope
from tests.api.test_ingest import STS_RESULT, result
from tests.api.test_tallies import tallies
from tests.conftest import MakeToken, bearer

Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]


def _find_hot(app: Any) -> hot.HotRoutes:
    layer = app.middleware_stack
    while not isinstance(layer, hot.HotRoutes):
        layer = layer.app
    return layer


@pytest.fixture
async def clients(resources: Resources, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clients]:
    served = create_app(resources.settings, resources)
    served.middleware_stack = served.build_middleware_stack()
    hot_layer = _find_hot(served)
    assert set(hot_layer.routes) == {("POST", "/v1/results"), ("POST", "/v1/tallies")}
    framework = hot_layer.app

    async def not_for_hot_paths(scope: Scope, receive: Receive, send: Send) -> None:
        assert (scope["method"], scope["path"]) not in hot_layer.routes, "FastAPI answered"
        await framework(scope, receive, send)

    hot_layer.app = not_for_hot_paths
    with monkeypatch.context() as patch:
        patch.setattr(hot, "_hot_routes", dict)
        routed = create_app(resources.settings, resources)
        routed.middleware_stack = routed.build_middleware_stack()
    assert not _find_hot(routed).routes

    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served, raise_app_exceptions=False),
            base_url="http://testserver",
        ) as a,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=routed, raise_app_exceptions=False),
            base_url="http://testserver",
        ) as b,
    ):
        yield a, b


async def both(clients: Clients, path: str, **kwargs: Any) -> httpx.Response:
    """POST to both apps; assert the answers are the same; return the hot path's."""
    answers = []
    for client in clients:
        headers = {**kwargs.pop("headers", {}), "X-Request-Id": "req-1"}
        answers.append(await client.post(path, headers=headers, **kwargs))
        kwargs["headers"] = {k: v for k, v in headers.items() if k != "X-Request-Id"}
    fast, routed = answers
    assert fast.status_code == routed.status_code
    assert fast.headers.multi_items() == routed.headers.multi_items()
    assert fast.content == routed.content
    # The contract of every answer: JSON, the request id echoed.
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["x-request-id"] == "req-1"
    assert fast.headers["content-length"] == str(len(fast.content))
    if fast.status_code >= 400:
        ErrorResponse.model_validate(fast.json())
    return fast


def _answered(route: str, status: str) -> float:
    labels = {"method": "POST", "route": route, "status": status}
    return REGISTRY.get_sample_value("tlsrpt_http_requests_total", labels) or 0.0


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
async def test_success_answers_match(
    clients: Clients, make_token: MakeToken, content_type: str
) -> None:
    headers = {**bearer(await make_token(TokenScope.INGEST)), "content-type": content_type}
    before = _answered("/v1/results", "200")
    body = b'{"results": [%s]}' % httpx.Response(200, json=STS_RESULT).content
    response = await both(clients, "/v1/results", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "sessions": 1}
    # The metrics label names the route on the hot path too.
    assert _answered("/v1/results", "200") == before + 2
    response = await both(clients, "/v1/tallies", json=tallies(None), headers=headers)
    assert response.json() == {"policies": 2, "sessions": 11, "recorded": True}


async def test_error_answers_match(
    clients: Clients, make_token: MakeToken, resources: Resources
) -> None:
    ingest = bearer(await make_token(TokenScope.INGEST))
    for path, good, bad in [
        ("/v1/results", {"results": [STS_RESULT]}, {"results": [STS_RESULT, result(count=0)]}),
        ("/v1/tallies", tallies(None), {"day": "2026-11-24", "policies": [{}]}),
    ]:
        # 401 without a token, and with an unknown one (WWW-Authenticate).
        response = await both(clients, path, json=good)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        response = await both(clients, path, json=good, headers=bearer("tlsrpt_unknown"))
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer error=")
        # 403: a token without the ingest scope.
        read = bearer(await make_token(TokenScope.READ))
        assert (await both(clients, path, json=good, headers=read)).status_code == 403
        # 400: not JSON.
        response = await both(clients, path, content=b"{", headers=ingest)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed_json")
        # 422: an invalid item, named.
        response = await both(clients, path, json=bad, headers=ingest)
        assert response.status_code == 422
        assert response.json()["error"]["details"]
        # 413: the body cap and the batch length.
        resources.settings.ingest.max_body_bytes = 10
        response = await both(clients, path, json=good, headers=ingest)
        assert (response.status_code, response.json()["error"]["code"]) == (413, "body_too_large")
        resources.settings.ingest.max_body_bytes = 10_000_000
        resources.settings.ingest.max_batch_items = 1
        response = await both(
            clients, path, json=bad if path == "/v1/results" else good, headers=ingest
        )
        assert response.status_code == 413
        resources.settings.ingest.max_batch_items = 10_000
    # 409: a closed day.
    assert await close_day(resources.pool, resources.clock, date(2026, 11, 23))
    closed = {"results": [result(timestamp="2026-11-23T10:00:00Z")]}
    assert (await both(clients, "/v1/results", json=closed, headers=ingest)).status_code == 409
    # 503 with Retry-After when the database is away.
    await resources.pool.close()
    for path, good in [("/v1/results", {"results": [STS_RESULT]}), ("/v1/tallies", tallies())]:
        response = await both(clients, path, json=good, headers=ingest)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"


async def test_other_methods_and_paths_go_to_fastapi(clients: Clients) -> None:
    served, _ = clients
    assert (await served.get("/v1/results")).status_code == 405
    assert (await served.post("/v1/results/")).status_code in (307, 404)
