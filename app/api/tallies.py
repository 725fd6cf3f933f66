"""`POST /v1/tallies`: exact pre-aggregated counters of one UTC day (scope `ingest`).

`POST /v1/results` takes sessions, one result type each. A sender that counted locally
may hold counts that shape can not express exactly: a session finished as success with
failure details attached, or one failed session with several details (both occur in
libtlsrpt datagrams from Postfix). This endpoint takes the counters as RFC 8460 §4.4
`policies` entries and adds them as they are, through the same ingest service. The
batch is all-or-nothing, validated like `/v1/results` (422 naming each bad policy's
index, field and reason), answered after the commit, refused with 409 when the day is
closed. A `batch-id` makes a retried batch count once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from app.api.auth import get_resources, require_scope
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.api.ingest import invalid_items, parse_json_object
from app.api.tally_schemas import TalliesAccepted, TalliesIn
from app.collector.batch import add_policy_counts
from app.ingest.service import TimestampWindow, record_tally
from app.tlsrpt.model import FailureDetail
from app.tlsrpt.tally import Tally
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
DOCUMENTED_MODELS: list[type] = [TalliesIn]


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
    settings = resources.settings
    document = parse_json_object(await read_body(request, settings.ingest.max_body_bytes))
    raw = document.get("policies")
    if isinstance(raw, list) and len(raw) > settings.ingest.max_batch_items:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(raw)} policies in one batch; the limit is {settings.ingest.max_batch_items}",
        )
    try:
        batch = TalliesIn.model_validate(document)
    except ValidationError as exc:
        raise _invalid(list(exc.errors()), raw) from None

    now = resources.clock()
    window = TimestampWindow.at(now, settings)
    reason = window.problem(datetime.combine(batch.day, time(), UTC))
    if reason is not None:
        raise ApiError(
            422,
            "invalid_request",
            f"day {batch.day.isoformat()} is not accepted: {reason}",
            [{"field": "day", "reason": reason}],
        )
    tally = Tally()
    for item in batch.policies:
        details: dict[FailureDetail, int] = {}
        for d in item.failure_details:
            detail = d.to_detail()
            details[detail] = details.get(detail, 0) + d.failed_session_count
        add_policy_counts(
            tally,
            batch.day,
            item.policy.to_policy(),
            successes=item.summary.total_successful_session_count,
            failures=item.summary.total_failure_session_count,
            details=details,
            recipients=[
                (
                    r.recipient_domain,
                    r.total_successful_session_count,
                    r.total_failure_session_count,
                )
                for r in item.recipient_domains
            ],
        )
    recorded = await record_tally(resources.pool, tally, batch_id=batch.batch_id)
    return TalliesAccepted(policies=len(batch.policies), sessions=tally.sessions, recorded=recorded)


def _invalid(errors: list[Any], raw: Any) -> ApiError:
    per_policy = [e for e in errors if len(e["loc"]) > 1 and e["loc"][0] == "policies"]
    envelope = [e for e in errors if e not in per_policy]
    if envelope:
        return ApiError(
            422, "invalid_request", "the batch is invalid", validation_details(envelope)
        )
    total = len(raw) if isinstance(raw, list) else 0
    return invalid_items(validation_details(per_policy, skip=1), total)
