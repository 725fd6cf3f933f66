"""The ingest endpoints: `POST /v1/results` (sessions) and `POST /v1/tallies` (counters).

`/v1/results` takes sessions, one result type each. A sender that counted locally may
hold counts that shape can not express exactly (a success with failure details attached,
one failed session with several details: both occur in libtlsrpt datagrams), so
`/v1/tallies` takes the counters of one UTC day as RFC 8460 §4.4 `policies` entries, and
a `batch-id` makes a retried batch count once. This module parses and authenticates;
the rules (window, closed days, semantic checks, counting, metrics) are the ingest
service's. Both are all-or-nothing, and the 200 is sent after the commit.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.auth import BEARER_SECURITY, authorize, get_resources
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.ingest import service as ingest
from app.ingest.wire import ResultIn, ResultsIn, TalliesIn
from app.tlsrpt.model import FailureDetail, Policy, ResultType
from app.tlsrpt.wire import DETAIL_FIELDS, PolicyIn
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
# Request bodies read by hand (for the size cap) are documented through these models.
DOCUMENTED_MODELS: list[type] = [ResultsIn, TalliesIn]


class ResultsAccepted(BaseModel):
    accepted: int = Field(description="Results stored (items of the batch).")
    sessions: int = Field(description="Sessions counted (the sum of `count`).")


class _ResultFieldsIn(ResultIn):
    """ResultIn with `policy` left raw: it is validated through `_validated_policy`."""

    policy: Any


_fields = TypeAdapter(list[_ResultFieldsIn])
_policy = TypeAdapter(PolicyIn)
_DETAIL_NAMES = frozenset(attr for _, attr in DETAIL_FIELDS)


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


def _detail_of(item: ResultIn) -> FailureDetail:
    if item.result_type is ResultType.SUCCESS and _DETAIL_NAMES.isdisjoint(item.model_fields_set):
        return ingest.SUCCESS  # most sessions: one shared object
    return item.failure_detail(item.result_type)


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
        if not isinstance(item, dict) or "policy" not in item:
            continue  # reported by the first pass ("Field required")
        raw_policy = item["policy"]
        if not isinstance(raw_policy, dict):
            details.append({"index": index, "field": "policy", "reason": "must be an object"})
            continue
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
            ingest.SUCCESS
            if item.result_type is ResultType.SUCCESS
            and _DETAIL_NAMES.isdisjoint(item.model_fields_set)
            else item.failure_detail(item.result_type),
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
async def post_results(request: Request) -> Response:
    await authorize(request, Scope.INGEST)
    resources = get_resources(request)
    document, raw = await read_ingest_body(request, "results")
    if set(document) != {"results"} or not raw:
        ingest.note_refused(ingest.REFUSED_MALFORMED)
        raise ApiError(
            422, "invalid_request", 'the body must be {"results": [...]} with at least one result'
        )
    sessions = await ingest.record_results(
        resources.committer, resources.clock, resources.settings, parse_results(raw)
    )
    return _json({"accepted": len(raw), "sessions": sessions})


def _json(content: dict[str, Any]) -> Response:
    """The hot routes answer with bytes: FastAPI then skips validating and encoding the
    return value against `response_model` (which still documents it)."""
    return Response(orjson.dumps(content), media_type="application/json")


class TalliesAccepted(BaseModel):
    policies: int = Field(description="Policy entries in the batch.")
    sessions: int = Field(description="Sessions counted (successful plus failed).")
    recorded: bool = Field(
        description="False when a batch with this batch-id was recorded before; nothing "
        "was added this time."
    )


@router.post(
    "/v1/tallies",
    response_model=TalliesAccepted,
    summary="Add pre-aggregated counters of one UTC day",
    description="Exact counters as RFC 8460 §4.4 `policies` entries (`policy`, `summary`, "
    "`failure-details` with `failed-session-count`), plus an optional "
    "`recipient-domains` breakdown. Failure-detail counts are taken as given (they need "
    "not add up to the failed sessions). All-or-nothing; a 200 means committed. 409 when "
    "the day's reports are already built. A batch repeated under the same `batch-id` is "
    "recorded once and answered with `recorded: false`.",
    responses=responses(400, 401, 403, 409, 413, 422),
    openapi_extra={
        "security": BEARER_SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TalliesIn"}}},
        },
    },
)
async def post_tallies(request: Request) -> Response:
    await authorize(request, Scope.INGEST)
    resources = get_resources(request)
    document, raw = await read_ingest_body(request, "policies")
    try:
        batch = TalliesIn.model_validate(document)
    except ValidationError as exc:
        raise _invalid(list(exc.errors()), raw) from None
    tally = batch.to_tally()
    recorded = await ingest.record_tally(
        resources.committer,
        resources.clock,
        resources.settings,
        tally,
        batch_id=batch.batch_id,
    )
    return _json(
        {"policies": len(batch.policies), "sessions": tally.sessions, "recorded": recorded}
    )


def _invalid(errors: list[Any], raw: list[Any]) -> Exception:
    per_policy = [e for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "policies"]
    envelope = [e for e in errors if e not in per_policy]
    if envelope:
        ingest.note_refused(ingest.REFUSED_MALFORMED)
        return ApiError(
            422, "invalid_request", "the batch is invalid", validation_details(envelope)
        )
    return invalid_items(validation_details(per_policy, skip=1), len(raw))
