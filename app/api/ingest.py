"""`POST /v1/results`: MTAs report the TLS outcome of their SMTP sessions.

The batch is all-or-nothing: every item is validated before anything is stored, and
the 200 is sent after the commit.
"""

from __future__ import annotations

import functools
from datetime import UTC
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError

from app import metrics
from app.api.auth import BEARER_SECURITY, authorize, get_resources
from app.api.body import read_body
from app.api.errors import ApiError, responses, validation_details
from app.api.ingest_schemas import PolicyIn, ResultIn, ResultsAccepted, ResultsIn
from app.ingest.service import TimestampWindow
from app.tlsrpt.model import Policy
from app.tlsrpt.tally import Tally
from app.tokens.service import Scope

router = APIRouter(tags=["ingest"])
# Request bodies read by hand (for the size cap) are documented through these models.
DOCUMENTED_MODELS: list[type] = [ResultsIn]

MAX_REPORTED_ERRORS = 100


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


def parse_results(raw: list[Any]) -> list[tuple[ResultIn, Policy]]:
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
        details.sort(key=lambda d: d["index"] if d["index"] is not None else -1)
        raise invalid_items(details, len(raw))
    return list(zip(items, policies, strict=True))


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
    items = parse_results(raw)
    now = resources.clock()
    window = TimestampWindow.at(now, settings)
    tally = Tally()
    problems = []
    for index, (item, policy) in enumerate(items):
        extra = item.detail_fields_on_success()
        if extra is not None:
            problems.append(
                {
                    "index": index,
                    "field": None,
                    "reason": f"failure-detail fields on a success result: {extra}",
                }
            )
            continue
        ts = item.timestamp or now
        reason = window.problem(ts)
        if reason is not None:
            problems.append({"index": index, "field": "timestamp", "reason": reason})
            continue
        tally.add_session(
            ts.astimezone(UTC).date(),
            policy,
            item.to_detail(),
            count=item.count,
            report_delivery=item.report_delivery,
            recipient_domain=item.recipient_domain,
        )
    if problems:
        raise invalid_items(problems, len(raw))
    await resources.committer.record(tally)
    metrics.INGEST_RESULTS.inc(len(items))
    metrics.INGEST_SESSIONS.inc(tally.sessions)
    return ResultsAccepted(accepted=len(items), sessions=tally.sessions)
