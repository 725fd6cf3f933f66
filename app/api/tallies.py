"""`POST /v1/tallies`: exact pre-aggregated counters of one UTC day (scope `ingest`).

`POST /v1/results` takes sessions, one result type each. A sender that counted locally
may hold counts that shape can not express exactly: a session finished as success with
failure details attached, or one failed session with several details (both occur in
libtlsrpt datagrams from Postfix). This endpoint takes the counters as RFC 8460 §4.4
`policies` entries (`app.ingest.wire.TalliesIn`) and hands them to the same ingest
service as results: all-or-nothing, 422 naming each bad policy's index, field and
reason, answered after the commit, 409 when the day is closed. A `batch-id` makes a
retried batch count once.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, ValidationError

from app.api.auth import get_resources, require_scope
from app.api.errors import ApiError, responses, validation_details
from app.api.ingest import invalid_items, read_ingest_body
from app.ingest import service as ingest
from app.ingest.wire import TalliesIn
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
DOCUMENTED_MODELS: list[type] = [TalliesIn]


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
    dependencies=[Depends(require_scope(Scope.INGEST))],
    responses=responses(400, 401, 403, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TalliesIn"}}},
        }
    },
)
async def post_tallies(request: Request) -> TalliesAccepted:
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
    return TalliesAccepted(policies=len(batch.policies), sessions=tally.sessions, recorded=recorded)


def _invalid(errors: list[Any], raw: list[Any]) -> Exception:
    per_policy = [e for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "policies"]
    envelope = [e for e in errors if e not in per_policy]
    if envelope:
        ingest.note_refused(ingest.REFUSED_MALFORMED)
        return ApiError(
            422, "invalid_request", "the batch is invalid", validation_details(envelope)
        )
    return invalid_items(validation_details(per_policy, skip=1), len(raw))
