"""`build_day` end to end against PostgreSQL: outcomes, idempotency, DNS retries, IDNA."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from app.dns.lookup import TemporaryDnsError
from app.ingest.service import ClosedDayError, day_aggregates
from app.report import service
from app.resources import Resources
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.report import build_report
from app.tlsrpt.tally import Tally
from tests import services
from tests.clock import FakeClock
from tests.dns.fake_resolver import FakeResolver

DAY = date(2026, 11, 23)


def sts(domain: str) -> Policy:
    return Policy(
        PolicyType.STS,
        domain,
        ("version: STSv1", "mode: enforce", f"mx: mx.{domain}"),
        (f"mx.{domain}",),
    )


async def ingest(resources: Resources, *entries: tuple[Policy, int, int, bool]) -> None:
    """Add (policy, successes, failures, report_delivery) counters for DAY."""
    tally = Tally()
    for policy, ok, failed, report_delivery in entries:
        for _ in range(ok):
            tally.add_session(DAY, policy, None, report_delivery=report_delivery)
        detail = FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.x")
        for _ in range(failed):
            tally.add_session(DAY, policy, detail, report_delivery=report_delivery)
    await services.record(resources, tally)


@pytest.fixture
def dns(resources: Resources) -> FakeResolver:
    resolver = FakeResolver()
    resources.resolver = resolver
    return resolver


async def rows(resources: Resources, query: str) -> list[tuple[object, ...]]:
    async with resources.pool.connection() as conn:
        cur = await conn.execute(query)
        return await cur.fetchall()


async def test_outcome_for_every_domain(resources: Resources, dns: FakeResolver) -> None:
    dns.publish(
        "example.com",
        "v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://r.example.com/v1,http://x.example",
    )
    dns.publish("mx1.example.net", "v=TLSRPTv1;rua=mailto:dane@example.net")
    dns.publish(
        "multi.example",
        "v=TLSRPTv1; rua=mailto:a@multi.example",
        "v=TLSRPTv1; rua=mailto:b@multi.example",
    )
    dns.publish("bad.example", "v=TLSRPTv1; rua=bad.example")
    dns.publish("http.example", "v=TLSRPTv1; rua=http://r.http.example/")
    dns.publish("loop.example", "v=TLSRPTv1; rua=mailto:a@loop.example")
    tlsa = Policy(PolicyType.TLSA, "mx1.example.net", ("3 1 1 AB12",))
    await ingest(
        resources,
        (sts("example.com"), 10, 2, False),
        (Policy(PolicyType.NO_POLICY_FOUND, "example.com"), 3, 0, False),
        (tlsa, 5, 1, False),  # DANE: the MX host is the policy domain (RFC 8460 §1.1)
        (sts("norecord.example"), 1, 0, False),
        (sts("multi.example"), 1, 0, False),
        (sts("bad.example"), 1, 0, False),
        (sts("http.example"), 1, 0, False),
        (sts("loop.example"), 4, 0, True),  # only sessions that delivered a TLS report
    )
    summary = await services.build_day(resources, DAY)
    assert (summary.built, summary.no_report, summary.pending, summary.already_done) == (2, 5, 0, 0)

    states = {
        r[0]: (r[1], r[2])
        for r in await rows(resources, "SELECT policy_domain, state, reason FROM report_domains")
    }
    assert states == {
        "example.com": ("built", None),
        "mx1.example.net": ("built", None),
        "norecord.example": ("no_report", "no_record"),
        "multi.example": ("no_report", "multiple_records"),
        "bad.example": ("no_report", "syntax_error"),
        "http.example": ("no_report", "no_usable_rua"),
        "loop.example": ("no_report", "only_report_delivery_results"),
    }
    assert "_smtp._tls.loop.example." not in dns.queries
    assert "_smtp._tls.mx1.example.net." in dns.queries

    reports = await rows(
        resources,
        "SELECT policy_domain, report_json, report_gzip, filename, rua, report_id FROM reports"
        " ORDER BY policy_domain",
    )
    assert [r[0] for r in reports] == ["example.com", "mx1.example.net"]
    _, report_json, report_gzip, filename, rua, report_id = reports[0]
    assert rua == ["mailto:tlsrpt@example.com", "https://r.example.com/v1"]
    assert gzip.decompress(report_gzip) == report_json  # type: ignore[arg-type]
    expected = build_report(
        service.reporter_of(resources.settings.report),
        DAY,
        "example.com",
        await day_aggregates(resources.pool, DAY, ["example.com"]),
    )
    assert (report_json, filename, report_id) == (
        expected.json,
        expected.filename,
        expected.report_id,
    )
    document = orjson.loads(report_json)
    assert document["date-range"]["start-datetime"] == "2026-11-23T00:00:00Z"
    assert sorted(p["policy"]["policy-type"] for p in document["policies"]) == [
        "no-policy-found",
        "sts",
    ]
    dane = orjson.loads(reports[1][1])  # type: ignore[arg-type]
    assert dane["policies"][0]["policy"]["policy-domain"] == "mx1.example.net"
    assert dane["policies"][0]["summary"] == {
        "total-successful-session-count": 5,
        "total-failure-session-count": 1,
    }

    deliveries = await rows(
        resources,
        "SELECT r.policy_domain, d.rua, d.kind, d.state FROM deliveries d"
        " JOIN reports r ON r.id = d.report_pk ORDER BY r.policy_domain, d.rua",
    )
    assert deliveries == [
        ("example.com", "https://r.example.com/v1", "https", "pending"),
        ("example.com", "mailto:tlsrpt@example.com", "mailto", "pending"),
        ("mx1.example.net", "mailto:dane@example.net", "mailto", "pending"),
    ]
    # The day is closed: ingest now refuses it.
    with pytest.raises(ClosedDayError):
        await ingest(resources, (sts("example.com"), 1, 0, False))


async def test_second_run_changes_nothing(resources: Resources, dns: FakeResolver) -> None:
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    await ingest(resources, (sts("example.com"), 1, 0, False), (sts("none.example"), 1, 0, False))
    first = await services.build_day(resources, DAY)
    before = await rows(resources, "SELECT * FROM reports ORDER BY id")
    before_d = await rows(resources, "SELECT * FROM deliveries ORDER BY id")
    before_s = await rows(resources, "SELECT * FROM report_domains ORDER BY policy_domain")
    dns.queries.clear()
    second = await services.build_day(resources, DAY)
    assert (first.built, first.no_report) == (1, 1)
    assert (second.built, second.no_report, second.already_done) == (0, 0, 2)
    assert dns.queries == []
    assert await rows(resources, "SELECT * FROM reports ORDER BY id") == before
    assert await rows(resources, "SELECT * FROM deliveries ORDER BY id") == before_d
    assert await rows(resources, "SELECT * FROM report_domains ORDER BY policy_domain") == before_s


async def test_concurrent_builders_make_one_report(resources: Resources, dns: FakeResolver) -> None:
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:tlsrpt@example.com")
    await ingest(resources, (sts("example.com"), 1, 0, False))
    one, two = await asyncio.gather(
        services.build_day(resources, DAY), services.build_day(resources, DAY)
    )
    assert one.built + two.built == 1
    assert await rows(resources, "SELECT count(*) FROM reports") == [(1,)]
    assert await rows(resources, "SELECT count(*) FROM deliveries") == [(1,)]


async def test_temporary_dns_failure_is_retried_then_given_up(
    resources: Resources, dns: FakeResolver, clock: FakeClock
) -> None:
    dns.fail("flaky.example", TemporaryDnsError("_smtp._tls.flaky.example: timed out"))
    dns.fail("down.example", TemporaryDnsError("_smtp._tls.down.example: SERVFAIL"))
    await ingest(resources, (sts("flaky.example"), 1, 0, False), (sts("down.example"), 1, 2, False))
    start = clock.now
    summary = await services.build_day(resources, DAY)
    assert (summary.pending, summary.built) == (2, 0)
    assert summary.next_retry_at == start + timedelta(seconds=300)
    state = await rows(
        resources,
        "SELECT state, reason, attempts, first_attempt_at, next_attempt_at FROM report_domains"
        " WHERE policy_domain = 'down.example'",
    )
    assert state == [
        (
            "pending",
            "dns_temporary_failure: _smtp._tls.down.example: SERVFAIL",
            1,
            start,
            start + timedelta(seconds=300),
        )
    ]
    # Not due yet: nothing is asked again.
    dns.queries.clear()
    summary = await services.build_day(resources, DAY)
    assert (summary.pending, dns.queries) == (2, [])

    # Due: flaky answers now, down still fails and backs off (300 s, then 600 s).
    clock.advance(seconds=301)
    dns.publish("flaky.example", "v=TLSRPTv1; rua=mailto:r@flaky.example")
    summary = await services.build_day(resources, DAY)
    assert (summary.built, summary.pending) == (1, 1)
    assert summary.next_retry_at == clock.now + timedelta(seconds=600)

    # Attempts go on with doubling delays until 24 h after the first, then give up.
    while True:
        clock.set(summary.next_retry_at or clock.now)
        summary = await services.build_day(resources, DAY)
        if summary.gave_up:
            break
    assert summary.gave_up == 1
    assert clock.now == start + timedelta(hours=24)
    state = await rows(
        resources,
        "SELECT state, attempts FROM report_domains WHERE policy_domain = 'down.example'",
    )
    assert state[0][0] == "gave_up"
    assert 5 < int(state[0][1]) < 20  # type: ignore[call-overload]
    assert await rows(resources, "SELECT policy_domain FROM reports") == [("flaky.example",)]


async def test_success_only_days_setting(resources: Resources, dns: FakeResolver) -> None:
    dns.publish("quiet.example", "v=TLSRPTv1; rua=mailto:r@quiet.example")
    dns.publish("noisy.example", "v=TLSRPTv1; rua=mailto:r@noisy.example")
    resources.settings.report.send_success_only_days = False
    await ingest(
        resources, (sts("quiet.example"), 9, 0, False), (sts("noisy.example"), 9, 1, False)
    )
    await services.build_day(resources, DAY)
    assert await rows(
        resources, "SELECT policy_domain, state, reason FROM report_domains ORDER BY 1"
    ) == [
        ("noisy.example", "built", None),
        ("quiet.example", "no_report", "success_only_day_disabled"),
    ]


async def test_spread_sets_first_delivery_attempt(resources: Resources, dns: FakeResolver) -> None:
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:a@example.com,mailto:b@example.com")
    await ingest(resources, (sts("example.com"), 1, 0, False))
    offsets = iter([3600.0, 7200.0])
    await services.build_day(resources, DAY, spread=lambda: next(offsets))
    delays = await rows(
        resources,
        "SELECT rua, extract(epoch FROM next_attempt_at - created_at)::int FROM deliveries"
        " ORDER BY rua",
    )
    assert delays == [("mailto:a@example.com", 3600), ("mailto:b@example.com", 7200)]


async def test_progress_is_reported(resources: Resources, dns: FakeResolver) -> None:
    await ingest(resources, *[(sts(f"d{i}.example"), 1, 0, False) for i in range(3)])
    calls: list[tuple[int, int]] = []
    await services.build_day(
        resources, DAY, progress=lambda done, total: calls.append((done, total))
    )
    assert calls[-1] == (3, 3)


async def test_retention_purges_reports_and_counters(
    resources: Resources, dns: FakeResolver, clock: FakeClock
) -> None:
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:a@example.com")
    await ingest(resources, (sts("example.com"), 1, 0, False))
    await services.build_day(resources, DAY)
    clock.set(datetime(2026, 12, 23, 12, tzinfo=UTC))  # 30 days later: still kept
    assert await services.purge_expired(resources) == service.PurgeSummary(0, 0)
    clock.set(datetime(2026, 12, 24, 12, tzinfo=UTC))
    assert await services.purge_expired(resources) == service.PurgeSummary(1, 1)
    assert await rows(
        resources,
        "SELECT (SELECT count(*) FROM reports), (SELECT count(*) FROM deliveries),"
        " (SELECT count(*) FROM report_domains), (SELECT count(*) FROM policy_counts)",
    ) == [(0, 0, 0, 0)]


async def test_chunks_with_lookups_ahead_and_whole_day_read(
    resources: Resources, dns: FakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CHUNK_SIZE", 2)
    for i in range(7):
        dns.publish(f"d{i}.example", f"v=TLSRPTv1; rua=mailto:r@d{i}.example")
    dns.fail("d3.example", TemporaryDnsError("SERVFAIL"))
    await ingest(resources, *[(sts(f"d{i}.example"), 1, i, False) for i in range(7)])
    calls: list[tuple[int, int]] = []
    summary = await services.build_day(
        resources, DAY, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(2, 7), (4, 7), (6, 7), (7, 7)]
    assert (summary.built, summary.pending) == (6, 1)
    reports = await rows(resources, "SELECT policy_domain, report_json FROM reports ORDER BY 1")
    assert [r[0] for r in reports] == [f"d{i}.example" for i in (0, 1, 2, 4, 5, 6)]
    for domain, body in reports:
        failures = int(str(domain)[1])
        summary_json = orjson.loads(body)["policies"][0]["summary"]  # type: ignore[arg-type]
        assert summary_json["total-failure-session-count"] == failures
