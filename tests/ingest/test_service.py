"""The one ingest path: every source meets the same rules and the same metrics."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest
from prometheus_client import REGISTRY

from app.collector.batch import Batch
from app.collector.sinks import BatchRefusedError, DatabaseSink
from app.ingest import service as ingest
from app.resources import Resources
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally
from app.tokens.service import Scope
from tests import services
from tests.clock import FakeClock
from tests.conftest import MakeToken, bearer

POLICY = Policy(PolicyType.NO_POLICY_FOUND, "example.org")


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("tlsrpt_ingest_rejected_batches_total", {"reason": reason})
    return value or 0.0


def session(result_type: ResultType = ResultType.SUCCESS, **fields: str) -> ingest.SessionResult:
    return ingest.SessionResult(POLICY, FailureDetail(result_type, **fields))


async def test_sessions_are_counted_and_invalid_ones_refuse_the_batch(
    resources: Resources, clock: FakeClock
) -> None:
    args = (resources.committer, resources.clock, resources.settings)
    recorded = await ingest.record_results(
        *args, [session(), session(ResultType.CERTIFICATE_EXPIRED, receiving_ip="192.0.2.1")]
    )
    assert recorded == 2

    before = refused(ingest.REFUSED_INVALID)
    future = ingest.SessionResult(
        POLICY, FailureDetail(ResultType.SUCCESS), clock.now + timedelta(hours=1)
    )
    with pytest.raises(ingest.InvalidResultsError) as error:
        await ingest.record_results(*args, [session(), session(receiving_ip="192.0.2.1"), future])
    assert [(p["index"], p["field"]) for p in error.value.problems] == [(1, None), (2, "timestamp")]
    assert "receiving-ip" in error.value.problems[0]["reason"]
    assert refused(ingest.REFUSED_INVALID) == before + 1
    [aggregate] = await ingest.day_aggregates(resources.pool, clock.now.date())
    assert (aggregate.success_count, aggregate.failure_count) == (1, 1)


async def test_a_closed_day_is_refused_by_every_source_and_counted(
    resources: Resources, clock: FakeClock
) -> None:
    day = clock.now.date()
    assert await services.close_day(resources, day)
    before = refused(ingest.REFUSED_CLOSED_DAY)
    with pytest.raises(ingest.ClosedDayError):
        await ingest.record_results(
            resources.committer, resources.clock, resources.settings, [session()]
        )
    tally = Tally()
    tally.add_session(day, POLICY, None)
    sink = DatabaseSink(resources.committer, resources.clock, resources.settings)
    with pytest.raises(BatchRefusedError, match="closed"):
        await sink.deliver(Batch(day, "batch-1", tally))
    assert refused(ingest.REFUSED_CLOSED_DAY) == before + 2
    assert await ingest.day_aggregates(resources.pool, day) == []


async def test_the_collector_follows_the_window_of_the_api(
    resources: Resources, clock: FakeClock
) -> None:
    """A spooled batch from beyond the retention is refused as `POST /v1/tallies` would."""
    old: date = clock.now.date() - timedelta(days=resources.settings.retention.results_days + 1)
    tally = Tally()
    tally.add_session(old, POLICY, None)
    sink = DatabaseSink(resources.committer, resources.clock, resources.settings)
    before = refused(ingest.REFUSED_OUT_OF_WINDOW)
    with pytest.raises(BatchRefusedError, match="retention"):
        await sink.deliver(Batch(old, "batch-old", tally))
    assert refused(ingest.REFUSED_OUT_OF_WINDOW) == before + 1


async def test_a_repeated_batch_id_is_recorded_once_even_after_its_day_closed(
    resources: Resources, clock: FakeClock
) -> None:
    day = clock.now.date()
    tally = Tally()
    tally.add_session(day, POLICY, None, count=3)
    assert await services.record(resources, tally, batch_id="b-1")
    assert not await services.record(resources, tally, batch_id="b-1")
    await services.close_day(resources, day)
    assert not await services.record(resources, tally, batch_id="b-1")
    [aggregate] = await ingest.day_aggregates(resources.pool, day)
    assert aggregate.success_count == 3


async def test_unreadable_and_oversized_bodies_are_counted_by_reason(
    client: httpx.AsyncClient, make_token: MakeToken, resources: Resources
) -> None:
    headers = bearer(await make_token(Scope.INGEST))
    malformed, too_large = refused(ingest.REFUSED_MALFORMED), refused(ingest.REFUSED_TOO_LARGE)
    response = await client.post("/v1/results", content=b"{", headers=headers)
    assert response.status_code == 400
    response = await client.post("/v1/tallies", json={"day": "x"}, headers=headers)
    assert response.status_code == 422
    limit = resources.settings.ingest.max_batch_items
    response = await client.post(
        "/v1/results", json={"results": [{}] * (limit + 1)}, headers=headers
    )
    assert response.status_code == 413
    assert refused(ingest.REFUSED_MALFORMED) == malformed + 2
    assert refused(ingest.REFUSED_TOO_LARGE) == too_large + 1
