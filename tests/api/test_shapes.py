"""No 500 on any shape: null where an object is required, lists for objects, wrong types
at every level of the ingest bodies get 400/422 naming the item and the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer

POLICY = {"policy-type": "sts", "policy-domain": "example.com"}
GOOD = {"policy": POLICY, "result-type": "success"}


def item(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


# (body, the field a detail must name or None for the body itself)
RESULTS_SHAPES: list[tuple[Any, str | None]] = [
    (None, None),
    ([], None),
    ("results", None),
    ({"results": None}, None),
    ({"results": {}}, None),
    ({"results": [None]}, None),
    ({"results": [[]]}, None),
    ({"results": [item(policy=None)]}, "policy"),
    ({"results": [item(policy=[])]}, "policy"),
    ({"results": [item(policy={**POLICY, "policy-type": None})]}, "policy.policy-type"),
    ({"results": [item(policy={**POLICY, "policy-domain": None})]}, "policy.policy-domain"),
    ({"results": [item(policy={**POLICY, "policy-domain": ""})]}, "policy.policy-domain"),
    ({"results": [item(policy={**POLICY, "policy-string": None})]}, "policy.policy-string"),
    ({"results": [item(policy={**POLICY, "mx-host": [None]})]}, "policy.mx-host.0"),
    ({"results": [item(**{"result-type": None})]}, "result-type"),
    ({"results": [item(count=None)]}, "count"),
    ({"results": [item(count="1")]}, "count"),
    ({"results": [item(count=10**23)]}, "count"),
    ({"results": [item(timestamp=0)]}, "timestamp"),
    ({"results": [item(**{"report-delivery": "yes"})]}, "report-delivery"),
    ({"results": [item(**{"sending-mta-ip": {}})]}, "sending-mta-ip"),
    ({"results": [item(**{"recipient-domain": []})]}, "recipient-domain"),
]


@pytest.mark.parametrize(("body", "field"), RESULTS_SHAPES)
async def test_results_of_any_shape_get_a_named_refusal(
    client: httpx.AsyncClient, make_token: MakeToken, body: Any, field: str | None
) -> None:
    headers = bearer(await make_token(Scope.INGEST))
    response = await client.post("/v1/results", json=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    error = response.json()["error"]
    assert error["message"]
    if field is not None:
        assert {"index": 0, "field": field} in [
            {"index": d["index"], "field": d["field"]} for d in error["details"]
        ], error


TALLIES_SHAPES: list[Any] = [
    None,
    {"day": None, "policies": []},
    {"day": "2026-11-24", "policies": None},
    {"day": "2026-11-24", "policies": [None]},
    {"day": "2026-11-24", "policies": [{"policy": None, "summary": None}]},
    {"day": "2026-11-24", "policies": [{"policy": POLICY, "summary": []}]},
    {"day": 0, "policies": [{"policy": POLICY, "summary": {}}]},
]


@pytest.mark.parametrize("body", TALLIES_SHAPES)
async def test_tallies_of_any_shape_get_a_refusal(
    client: httpx.AsyncClient, make_token: MakeToken, body: Any
) -> None:
    headers = bearer(await make_token(Scope.INGEST))
    response = await client.post("/v1/tallies", json=body, headers=headers)
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["message"]


async def test_a_405_allows_every_method_of_the_path(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = bearer(await make_token(Scope.ADMIN))
    response = await client.request("OPTIONS", "/v1/suppressions", headers=headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"  # two routes share the path


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/reports?day=0", "query.day"),  # pydantic alone reads 0 as 1970-01-01
        ("/v1/deliveries?day=20261124", "query.day"),
        ("/v1/reports/99999999999999999999/deliveries", "path.report_pk"),  # past bigint
        ("/v1/reports/preview?policy_domain=&day=2026-11-24", "query.policy_domain"),
        ("/v1/inbound/summary?domain=", "query.domain"),
    ],
)
async def test_parameters_outside_the_schema_are_422(
    client: httpx.AsyncClient, make_token: MakeToken, path: str, field: str
) -> None:
    headers = bearer(await make_token(Scope.ADMIN))
    response = await client.get(path, headers=headers)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]
