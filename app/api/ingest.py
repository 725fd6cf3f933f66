"""`POST /v1/results`: MTAs report the TLS outcome of their SMTP sessions.

This module parses and authenticates; the rules (window, closed days, semantic checks,
counting, metrics) are the ingest service's. The 200 is sent after the commit.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.auth import BEARER_SECURITY, authorize, get_resources
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.ingest import service as ingest
from app.ingest.wire import ResultIn, ResultsIn
from app.tlsrpt.model import Policy
from app.tlsrpt.wire import PolicyIn
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
# Request bodies read by hand (for the size cap) are documented through these models.
DOCUMENTED_MODELS: list[type] = [ResultsIn]


class ResultsAccepted(BaseModel):
    accepted: int = Field(description="Results stored (items of the batch).")
    sessions: int = Field(description="Sessions counted (the sum of `count`).")


class _ResultFieldsIn(ResultIn):
    """ResultIn with `policy` left raw: it is validated through `_validated_policy`."""

    policy: Any


_fields = TypeAdapter(list[_ResultFieldsIn])
_policy = TypeAdapter(PolicyIn)


@functools.lru_cache(maxsize=65536)
def _validated_policy(frozen: tuple[tuple[str, Any], ...]) -> Policy:
    """MTAs send the same few policies all day: validate and normalise each once.

    Only valid policies are cached (lru_cache does not keep exceptions)."""
    raw = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen}
    return _policy.validate_python(raw).to_policy()


def _policy_of(raw: Any) -> Policy:
    if type(raw) is dict:
        try:
            frozen = tuple([(k, tuple(v) if type(v) is list else v) for k, v in raw.items()])
            return _validated_policy(frozen)
        except TypeError:  # unhashable content (nested objects): validate uncached
            pass
    return _policy.validate_python(raw).to_policy()


def parse_results(raw: list[Any]) -> list[ingest.SessionResult]:
    """Validate every item; raise ApiError 422 listing each bad item's field and reason."""
    details: list[dict[str, Any]] = []
    try:
        items = _fields.validate_python(raw)
    except ValidationError as exc:
        details = validation_details(list(exc.errors()))
        items = []
    policies: list[Policy] = []
    for index, item in enumerate(raw):
        raw_policy = item.get("policy") if isinstance(item, dict) else None
        if raw_policy is None:
            continue  # reported by the first pass ("Field required")
        try:
            policies.append(_policy_of(raw_policy))
        except ValidationError as exc:
            for d in validation_details(list(exc.errors())):
                d["field"] = "policy" + ("." + d["field"] if d["field"] else "")
                d["index"] = index
                details.append(d)
    if details:
        raise invalid_items(details, len(raw))
    return [
        ingest.SessionResult(
            policy,
            item.failure_detail(item.result_type),
            item.timestamp,
            item.count,
            item.report_delivery,
            item.recipient_domain,
        )
        for item, policy in zip(items, policies, strict=True)
    ]


async def read_ingest_body(request: Request, list_key: str) -> tuple[dict[str, Any], list[Any]]:
    """The JSON object of an ingest body and its list `list_key`; 400/413/422 counted as
    refused batches."""
    limits = get_resources(request).settings.ingest
    try:
        body = await read_body(request, limits.max_body_bytes)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ApiError(422, "invalid_request", "the body must be a JSON object")
        raw = document.get(list_key)
        if isinstance(raw, list) and len(raw) > limits.max_batch_items:
            raise ApiError(
                413,
                "batch_too_large",
                f"{len(raw)} {list_key} in one batch; the limit is {limits.max_batch_items}",
            )
    except ApiError as exc:
        ingest.note_refused(
            ingest.REFUSED_TOO_LARGE if exc.status == 413 else ingest.REFUSED_MALFORMED
        )
        raise
    return document, raw if isinstance(raw, list) else []


def invalid_items(details: list[dict[str, Any]], total: int) -> ingest.InvalidResultsError:
    ingest.note_refused(ingest.REFUSED_INVALID)
    return ingest.InvalidResultsError(details, total)


@router.post(
    "/v1/results",
    response_model=ResultsAccepted,
    summary="Report SMTP session TLS results",
    description='One result or a batch (`{"results": [...]}`). All-or-nothing: if any '
    "item is invalid, nothing is stored and the 422 names each bad item's index, field "
    "and reason. A 200 means the batch is committed. Results for a UTC day whose reports "
    "are already built get 409.",
    responses=responses(400, 401, 403, 409, 413, 422),
    openapi_extra={
        "security": BEARER_SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResultsIn"}}},
        },
    },
)
async def post_results(request: Request) -> ResultsAccepted:
    await authorize(request, Scope.INGEST)
    resources = get_resources(request)
    document, raw = await read_ingest_body(request, "results")
    if set(document) != {"results"} or not raw:
        ingest.note_refused(ingest.REFUSED_MALFORMED)
        raise ApiError(
            422, "invalid_request", 'the body must be {"results": [...]} with at least one result'
        )
    recorded = await ingest.record_results(
        resources.committer, resources.clock, resources.settings, parse_results(raw)
    )
    return ResultsAccepted(accepted=recorded.results, sessions=recorded.sessions)
