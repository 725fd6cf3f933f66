"""The ingest endpoints: `POST /v1/results` (sessions) and `POST /v1/tallies` (counters).

`/v1/results` takes sessions, one result type each. A sender that counted locally may
hold counts that shape can not express exactly (a success with failure details attached,
one failed session with several details: both occur in libtlsrpt datagrams), so
`/v1/tallies` takes the counters of one UTC day as RFC 8460 §4.4 `policies` entries, and
a `batch-id` makes a retried batch count once. This module parses and authenticates;
the rules (window, closed days, semantic checks, counting, metrics) are the ingest
service's. Both are all-or-nothing, and the 200 is sent after the commit.

A body is parsed and validated in one pass (`model_validate_json` on the wire models);
one that pass refuses takes the slow path (orjson, then the items one by one) that
names each problem: which item, which field, why. `app.api.hot` calls these endpoints
without FastAPI's routing layers.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from app.api.auth import BEARER_SECURITY, authorize, get_resources
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.ingest import service as ingest
from app.ingest.wire import ResultIn, ResultsIn, TalliesIn
from app.tlsrpt.model import Policy
from app.tlsrpt.wire import PolicyIn
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
# Request bodies read by hand (for the size cap) are documented through these models.
DOCUMENTED_MODELS: list[type] = [ResultsIn, TalliesIn]


class ResultsAccepted(BaseModel):
    accepted: int = Field(description="Results stored (items of the batch).")
    sessions: int = Field(description="Sessions counted (the sum of `count`).")


class _ResultFieldsIn(ResultIn):
    """ResultIn with `policy` left raw: the slow path validates it apart, to name what is
    wrong with it (`policy.<field>`, or "must be an object")."""

    policy: Any


_fields = TypeAdapter(list[_ResultFieldsIn])
_policy = TypeAdapter(PolicyIn)


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
            policies.append(_policy.validate_python(raw_policy).to_policy())
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
            ingest.detail_of(item),
            item.timestamp,
            item.count,
            item.report_delivery,
            item.recipient_domain,
        )
        for item, policy in zip(items, policies, strict=True)
    ]


async def read_ingest_bytes(request: Request) -> bytes:
    """The body under its size cap; a 413 is counted as a refused batch."""
    try:
        return await read_body(request, get_resources(request).settings.ingest.max_body_bytes)
    except ApiError:
        ingest.note_refused(ingest.REFUSED_TOO_LARGE)
        raise


def ingest_document(
    request: Request, body: bytes, list_key: str
) -> tuple[dict[str, Any], list[Any]]:
    """The JSON object of an ingest body and its list `list_key`; 400/413/422 counted as
    refused batches. The slow path: it names what is wrong with a body the one-pass
    validation refused."""
    limits = get_resources(request).settings.ingest
    try:
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
    body = await read_ingest_bytes(request)
    # One pass: parse and validate the bytes on the wire model, then tally straight from
    # the validated items. A body it refuses (or one over the batch limit) takes the
    # slow path, which names each problem.
    try:
        items: list[ResultIn] | None = ResultsIn.model_validate_json(body).results
    except ValidationError:
        items = None
    if items is not None and len(items) <= resources.settings.ingest.max_batch_items:
        sessions = await ingest.record_items(
            resources.committer, resources.clock, resources.settings, items
        )
        return _json({"accepted": len(items), "sessions": sessions})
    document, raw = ingest_document(request, body, "results")
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
    body = await read_ingest_bytes(request)
    try:  # one pass; a refused body takes the slow path, which names each problem
        batch: TalliesIn | None = TalliesIn.model_validate_json(body)
    except ValidationError:
        batch = None
    if batch is None or len(batch.policies) > resources.settings.ingest.max_batch_items:
        document, raw = ingest_document(request, body, "policies")
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
