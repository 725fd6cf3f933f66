"""`/metrics`: open by default, a `metrics` token when TLSRPT_METRICS__REQUIRE_TOKEN is
set; the database figures and ingest counters scraped and parsed with prometheus_client."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.alerts import gauges
from app.config import MetricsSettings
from app.ingest.service import SessionResult, record_results
from app.main import create_app
from app.resources import Resources
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tokens.service import Scope
from tests.conftest import MakeToken, bearer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_scrape_parses_with_database_figures(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    policy = Policy(PolicyType.TLSA, "mx.example.net", ("3 1 1 AA",))
    before = _samples((await client.get("/metrics")).text)
    key = (
        "tlsrpt_ingest_sessions_by_result_total",
        (("policy_type", "tlsa"), ("result_type", "dnssec-invalid")),
    )
    await record_results(
        resources.committer,
        resources.clock,
        resources.settings,
        [SessionResult(policy, FailureDetail(ResultType.DNSSEC_INVALID), count=7)],
    )
    await gauges.refresh(resources.pool, resources.clock, resources.settings)
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    after = _samples(answer.text)
    assert after[key] - before.get(key, 0.0) == 7
    assert after[("tlsrpt_last_result_timestamp_seconds", ())] == resources.clock().timestamp()
    # Today's results are in an open day: its age counts from the day's start.
    age = after[("tlsrpt_oldest_open_result_age_seconds", ())]
    assert age == resources.clock().hour * 3600 + resources.clock().minute * 60
    assert ("tlsrpt_failing_policy_domains", ()) in after


async def test_token_required_when_configured(resources: Resources, make_token: MakeToken) -> None:
    settings = resources.settings.model_copy(
        update={"metrics": MetricsSettings(require_token=True)}
    )
    app = create_app(settings, resources)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/metrics")).status_code == 401
        ingest = bearer(await make_token(Scope.INGEST))
        assert (await c.get("/metrics", headers=ingest)).status_code == 403
        scraper = bearer(await make_token(Scope.METRICS))
        answer = await c.get("/metrics", headers=scraper)
        assert answer.status_code == 200 and "tlsrpt_http_requests_total" in answer.text


async def test_open_by_default(client: httpx.AsyncClient) -> None:
    assert (await client.get("/metrics")).status_code == 200
