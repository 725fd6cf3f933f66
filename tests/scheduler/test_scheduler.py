"""The scheduler against PostgreSQL and loopback sinks: grace, catch-up, retention, DNS
retries, two instances, a dead instance's job, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from app.delivery.senders import startup_warnings
from app.dns.lookup import TemporaryDnsError
from app.resources import Resources
from app.scheduler import store
from app.scheduler.service import BUILD_JOB, OUTAGE_RETRY_CAP, days_to_build
from app.tlsrpt.model import Policy, PolicyType
from app.tlsrpt.tally import Tally
from tests import services
from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa
from tests.delivery.conftest import dkim_pair, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import DeliveryEnv, delivery_env, delivery_states
from tests.dns.fake_resolver import FakeResolver
from tests.services import SchedulerOn

TODAY = datetime.now(UTC).date()


def test_days_to_build_waits_for_grace_and_respects_retention() -> None:
    day = date(2026, 3, 10)
    grace = timedelta(minutes=15)
    open_days = [date(2026, 1, 1), date(2026, 3, 8), date(2026, 3, 9), day]
    after_midnight = datetime(2026, 3, 11, 0, 14, tzinfo=UTC)
    oldest = date(2026, 2, 9)
    assert days_to_build(after_midnight, open_days, grace=grace, oldest=oldest) == [
        date(2026, 3, 8),
        date(2026, 3, 9),
    ]
    after_grace = datetime(2026, 3, 11, 0, 15, tzinfo=UTC)
    assert days_to_build(after_grace, open_days, grace=grace, oldest=oldest)[-1] == day


@pytest.fixture
async def env(
    database_url: str,
    tmp_path: Path,
    test_ca: LoopbackCa,  # noqa: F811
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> AsyncIterator[DeliveryEnv]:
    # The fake clock starts near the real time: the tests name days relative to today.
    clock = FakeClock(datetime.now(UTC) + timedelta(minutes=1))
    async with delivery_env(database_url, tmp_path, test_ca, dkim_pair[0], clock) as e:
        yield e


async def ingest(resources: Resources, day: date, *domains: str) -> None:
    tally = Tally()
    for domain in domains:
        tally.add_session(day, Policy(PolicyType.NO_POLICY_FOUND, domain), None)
    await services.record(resources, tally)


async def instance(env: DeliveryEnv, dns: FakeResolver, name: str) -> SchedulerOn:
    # No grace: yesterday is over even when the tests run just after midnight.
    resources = await env.open_resources(
        scheduler=env.settings.scheduler.model_copy(update={"grace_seconds": 0})
    )
    resources.resolver = dns
    return SchedulerOn(resources, owner=name, rand=lambda: 0.0)


async def job_rows(resources: Resources) -> dict[date, tuple[str, int]]:
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT day, state, runs FROM scheduler_jobs WHERE job = 'build_day'"
        )
        return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}


async def test_two_instances_build_once_and_deliver_each_rua_once(env: DeliveryEnv) -> None:
    dns = FakeResolver(env.dns)  # the DKIM key too: each instance checks it once an hour
    domains = [f"d{n}.example" for n in range(40)]
    for domain in domains:
        dns.publish(domain, f"v=TLSRPTv1; rua=mailto:r@{domain},{env.https_rua('/' + domain)}")
    one, two = await instance(env, dns, "one"), await instance(env, dns, "two")
    day = TODAY - timedelta(days=1)
    await ingest(one.resources, day, *domains)

    rounds = await asyncio.gather(one.run_once(), two.run_once())
    assert sorted(d for r in rounds for d in r.built_days) == [day]
    # Deliveries built by the slower instance may be left for the next round.
    await asyncio.gather(one.run_once(), two.run_once())

    assert sorted(m.rcpt_tos[0] for m in env.smtp.messages) == sorted(f"r@{d}" for d in domains)
    assert sorted(p.path for p in env.https.posts) == sorted("/" + d for d in domains)
    policy_lookups = [q for q in dns.queries if q.startswith("_smtp._tls.")]
    assert len(policy_lookups) == len(domains)  # each domain looked up once
    assert await job_rows(one.resources) == {day: ("done", 1)}


async def test_missed_days_are_caught_up_within_retention(env: DeliveryEnv) -> None:
    dns = FakeResolver()
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:r@example.com")
    scheduler = await instance(env, dns, "one")
    days = [TODAY - timedelta(days=n) for n in (1, 2, 5)]
    expired = TODAY - timedelta(days=scheduler.resources.settings.retention.results_days + 1)
    for day in days:
        await ingest(scheduler.resources, day, "example.com")
    # Results of `expired` were taken while it was within the retention.
    now = env.clock()
    env.clock.set(now - timedelta(days=2))
    await ingest(scheduler.resources, expired, "example.com")
    env.clock.set(now)
    round_ = await scheduler.run_once()
    assert round_.built_days == sorted(days)
    assert round_.delivered == 3
    assert expired not in await job_rows(scheduler.resources)
    assert len(env.smtp.messages) == 3
    # Nothing is built twice.
    assert (await scheduler.run_once()).built_days == []


async def test_temporary_dns_failure_is_retried_by_the_job(env: DeliveryEnv) -> None:
    dns = FakeResolver()
    dns.fail("example.com", TemporaryDnsError("example.com: timed out"))
    scheduler = await instance(env, dns, "one")
    day = TODAY - timedelta(days=1)
    await ingest(scheduler.resources, day, "example.com")
    assert (await scheduler.run_once()).built_days == [day]
    assert (await job_rows(scheduler.resources))[day] == ("retry", 1)
    assert env.smtp.messages == []

    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:r@example.com")
    assert (await scheduler.run_once()).built_days == []  # the retry is not due yet
    env.clock.advance(hours=1)
    round_ = await scheduler.run_once()
    assert round_.built_days == [day]
    assert round_.delivered == 1
    assert (await job_rows(scheduler.resources))[day] == ("done", 2)


async def test_a_dead_instances_build_is_taken_over_after_its_lease(env: DeliveryEnv) -> None:
    dns = FakeResolver()
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:r@example.com")
    survivor = await instance(env, dns, "survivor")
    day = TODAY - timedelta(days=1)
    await ingest(survivor.resources, day, "example.com")
    async with survivor.resources.pool.connection() as conn:
        # An instance claimed the day and died before building it.
        assert await store.claim_job(
            conn, job=BUILD_JOB, day=day, owner="dead", now=env.clock(), lease_seconds=1800
        )
    assert (await survivor.run_once()).built_days == []
    env.clock.advance(seconds=1801)
    assert (await survivor.run_once()).built_days == [day]
    assert (await job_rows(survivor.resources))[day] == ("done", 2)
    assert len(env.smtp.messages) == 1


async def test_stop_ends_run_after_the_round(env: DeliveryEnv) -> None:
    dns = FakeResolver()
    dns.publish("example.com", "v=TLSRPTv1; rua=mailto:r@example.com")
    resources = (await instance(env, dns, "one")).resources
    paused = asyncio.Event()

    async def sleep(seconds: float) -> None:
        paused.set()
        await asyncio.Event().wait()  # only stop() ends the pause

    scheduler = SchedulerOn(resources, owner="one", sleep=sleep, rand=lambda: 0.0)
    await ingest(resources, TODAY - timedelta(days=1), "example.com")
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(paused.wait(), timeout=30)
    assert len(env.smtp.messages) == 1
    scheduler.stop()
    await asyncio.wait_for(task, timeout=5)


async def test_without_dkim_key_mail_is_not_sent_and_https_is(
    database_url: str,
    tmp_path: Path,
    test_ca: LoopbackCa,  # noqa: F811
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> None:
    clock = FakeClock(datetime.now(UTC) + timedelta(minutes=1))
    async with delivery_env(
        database_url, tmp_path, test_ca, dkim_pair[0], clock, dkim=False
    ) as env:
        dns = FakeResolver()
        dns.publish("example.com", f"v=TLSRPTv1; rua=mailto:r@example.com,{env.https_rua()}")
        scheduler = await instance(env, dns, "one")
        warnings = startup_warnings(
            scheduler.resources.settings, scheduler.resources.open_senders()
        )
        assert any("No DKIM key is configured" in w for w in warnings)
        await ingest(scheduler.resources, TODAY - timedelta(days=1), "example.com")
        assert (await scheduler.run_once()).delivered == 1
        states = await delivery_states(scheduler.resources)
        assert states["mailto:r@example.com"][0] == "no_dkim_key"
        assert "TLSRPT_DKIM__PRIVATE_KEY_FILE" in (states["mailto:r@example.com"][2] or "")
        assert states[env.https_rua()][0] == "sent"
        assert env.smtp.messages == [] and len(env.https.posts) == 1


async def test_rounds_back_off_while_the_database_is_away_and_say_so_once(
    env: DeliveryEnv, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = await instance(env, FakeResolver(), "one")
    poll = env.settings.scheduler.poll_seconds
    await scheduler.resources.pool.close()  # every round meets PoolClosed: away
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 4:
            scheduler.stop()

    scheduler._sleep = sleep
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(scheduler.run(), timeout=30)
    # The one backoff rule from the poll interval (no jitter here), not one line per round.
    cap = max(poll, OUTAGE_RETRY_CAP)
    assert pauses == [min(poll * 2**n, cap) for n in range(4)]
    assert pauses[-1] > poll
    events = [r.getMessage() for r in caplog.records]
    assert events.count("database_unavailable") == 1
    assert "scheduler_round_failed" not in events
