"""`POST /v1/results`: MTAs report the TLS outcome of their SMTP sessions.

The batch is all-or-nothing: every item is validated before anything is stored, and
the 200 is sent after the commit.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import TypeAdapter, ValidationError

from app.api.auth import get_resources, require_scope
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.api.ingest_schemas import ResultIn, ResultsAccepted, ResultsIn
from app.ingest.service import check_timestamp, record_tally
from app.tlsrpt.tally import Tally
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
# Request bodies read by hand (for the size cap) are documented through these models.
DOCUMENTED_MODELS: list[type] = [ResultsIn]

_items = TypeAdapter(list[ResultIn])
MAX_REPORTED_ERRORS = 100


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    return document


def invalid_items(details: list[dict[str, Any]], total: int) -> ApiError:
    bad = len({d["index"] for d in details})
    return ApiError(
        422,
        "invalid_results",
        f"{bad} of {total} results are invalid; nothing was stored",
        details[:MAX_REPORTED_ERRORS],
    )


@router.post(
    "/v1/results",
    response_model=ResultsAccepted,
    summary="Report SMTP session TLS results",
    description='One result or a batch (`{"results": [...]}`). All-or-nothing: if any '
    "item is invalid, nothing is stored and the 422 names each bad item's index, field "
    "and reason. A 200 means the batch is committed. Results for a UTC day whose reports "
    "are already built get 409.",
    dependencies=[Depends(require_scope(Scope.INGEST))],
    responses=responses(400, 401, 403, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ResultsIn"}}},
        }
    },
)
async def post_results(request: Request) -> ResultsAccepted:
    resources = get_resources(request)
    settings = resources.settings
    document = parse_json_object(await read_body(request, settings.ingest.max_body_bytes))
    raw = document.get("results")
    if set(document) != {"results"} or not isinstance(raw, list) or not raw:
        raise ApiError(
            422, "invalid_request", 'the body must be {"results": [...]} with at least one result'
        )
    if len(raw) > settings.ingest.max_batch_items:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(raw)} results in one batch; the limit is {settings.ingest.max_batch_items}",
        )
    try:
        items = _items.validate_python(raw)
    except ValidationError as exc:
        raise invalid_items(validation_details(list(exc.errors())), len(raw)) from None

    now = resources.clock()
    tally = Tally()
    problems = []
    for index, item in enumerate(items):
        ts = item.timestamp or now
        reason = check_timestamp(ts, now, settings)
        if reason is not None:
            problems.append({"index": index, "field": "timestamp", "reason": reason})
            continue
        tally.add_session(
            ts.astimezone(UTC).date(),
            item.policy.to_policy(),
            item.to_detail(),
            count=item.count,
            report_delivery=item.report_delivery,
            recipient_domain=item.recipient_domain,
        )
    if problems:
        raise invalid_items(problems, len(raw))
    await record_tally(resources.pool, tally)
    return ResultsAccepted(accepted=len(items), sessions=tally.sessions)
