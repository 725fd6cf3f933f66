"""deliver_due against real PostgreSQL and loopback sinks: outcomes, retries, leases."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Callable
from datetime import date, timedelta
from email import policy
from email.parser import BytesParser

import dkim
import pytest

from app.delivery import store
from app.delivery.store import AttemptRecord, MarkRow
from tests.delivery.env import (
    DeliveryEnv,
    attempt_rows,
    deliver,
    delivery_states,
    store_report,
)

DAY = date(2026, 11, 23)


async def test_mail_and_https_are_delivered_once(
    env: DeliveryEnv, dkim_dns: Callable[..., bytes | None]
) -> None:
    resources = await env.open_resources()
    body = b'{"organization-name":"Sender Org"}'
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com", env.https_rua()],
        next_attempt_at=env.clock() - timedelta(seconds=1),
        report_json=body,
    )
    assert await deliver(resources, owner="a", limit=100) == 2
    assert await deliver(resources, owner="a", limit=100) == 0

    [mail] = env.smtp.messages
    assert mail.mail_from == "reports@sender.example"
    assert mail.rcpt_tos == ["tlsrpt@example.com"]
    assert dkim.verify(mail.content, dnsfunc=dkim_dns, tlsrpt="strict")
    message = BytesParser(policy=policy.default).parsebytes(mail.content)
    assert message["TLS-Report-Domain"] == "example.com"
    attachment = next(iter(message.iter_attachments()))
    assert gzip.decompress(attachment.get_content()) == body

    [post] = env.https.posts
    assert gzip.decompress(post.body) == body
    states = await delivery_states(resources)
    assert {state for state, _, _ in states.values()} == {"sent"}
    assert await attempt_rows(resources, "mailto:tlsrpt@example.com") == [
        (1, "sent", 250, None, None, "250 2.0.0 queued as TEST")
    ]
    assert (await attempt_rows(resources, env.https_rua()))[0][:4] == (1, "sent", None, 200)


async def test_not_due_yet_is_left_alone(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=env.clock() + timedelta(minutes=5),
    )
    assert await deliver(resources, owner="a", limit=100) == 0
    env.clock.advance(minutes=5)
    assert await deliver(resources, owner="a", limit=100) == 1
    assert len(env.smtp.messages) == 1


async def test_temporary_failures_are_retried_then_succeed(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    with socket.socket() as closed:
        closed.bind(("127.0.0.2", env.https_port))  # nothing listens: connection refused
        env.resolver.answers["later.test"] = ["127.0.0.2"]
        refused_rua = f"https://later.test:{env.https_port}/r"
        env.smtp.rcpt_replies.append("451 4.7.1 Greylisted, try again")
        env.https.statuses.append(503)
        await store_report(
            resources,
            day=DAY,
            policy_domain="example.com",
            rua=["mailto:tlsrpt@example.com", env.https_rua(), refused_rua],
            next_attempt_at=env.clock(),
        )
        assert await deliver(resources, owner="a", limit=100, jitter=lambda: 0.0) == 3
    states = await delivery_states(resources)
    assert states["mailto:tlsrpt@example.com"][:2] == ("pending", 1)
    assert "451 4.7.1 Greylisted" in (states["mailto:tlsrpt@example.com"][2] or "")
    assert states[env.https_rua()][:2] == ("pending", 1)
    assert states[refused_rua][:2] == ("pending", 1)
    assert "can not connect" in (states[refused_rua][2] or "")

    # Not again before the backoff (60 s initial) has passed.
    env.clock.advance(seconds=59)
    assert await deliver(resources, owner="a", limit=100) == 0
    env.clock.advance(seconds=1)
    env.resolver.answers["later.test"] = ["127.0.0.1"]  # the receiver is back
    assert await deliver(resources, owner="a", limit=100) == 3

    states = await delivery_states(resources)
    assert {rua: s[:2] for rua, s in states.items()} == {
        "mailto:tlsrpt@example.com": ("sent", 2),
        env.https_rua(): ("sent", 2),
        refused_rua: ("sent", 2),
    }
    assert len(env.smtp.messages) == 1
    assert len(env.https.posts) == 2
    mail_attempts = await attempt_rows(resources, "mailto:tlsrpt@example.com")
    assert [(a[0], a[1], a[2]) for a in mail_attempts] == [(1, "temporary", 451), (2, "sent", 250)]
    https_attempts = await attempt_rows(resources, env.https_rua())
    assert [(a[0], a[1], a[3]) for a in https_attempts] == [(1, "temporary", 503), (2, "sent", 200)]


async def test_permanent_failures_end_as_failed(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    env.smtp.rcpt_replies.append("550 5.1.1 No such user")
    env.https.statuses.append(404)
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:nobody@example.com", env.https_rua("/missing")],
        next_attempt_at=env.clock(),
    )
    assert await deliver(resources, owner="a", limit=100) == 2
    env.clock.advance(hours=30)
    assert await deliver(resources, owner="a", limit=100) == 0
    states = await delivery_states(resources)
    assert states["mailto:nobody@example.com"][:2] == ("failed", 1)
    assert "550 5.1.1 No such user" in (states["mailto:nobody@example.com"][2] or "")
    assert states[env.https_rua("/missing")][:2] == ("failed", 1)
    assert "404" in (states[env.https_rua("/missing")][2] or "")
    assert env.smtp.messages == [] and env.https.posts == []
    [attempt] = await attempt_rows(resources, "mailto:nobody@example.com")
    assert attempt[1:3] == ("permanent", 550)


async def test_a_day_of_temporary_failures_ends_as_failed(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    start = env.clock()
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=start,
    )
    rounds = 0
    while True:
        env.smtp.rcpt_replies.append("421 4.3.2 Service not available")
        attempted = await deliver(resources, owner="a", limit=10, jitter=lambda: 0.0)
        state, attempts, error = (await delivery_states(resources))["mailto:tlsrpt@example.com"]
        if state == "failed":
            break
        assert attempted == 1 and state == "pending"
        async with resources.pool.connection() as conn:
            cur = await conn.execute("SELECT next_attempt_at FROM deliveries")
            row = await cur.fetchone()
        assert row is not None
        env.clock.set(row[0])
        rounds += 1
        assert rounds < 50
    assert env.clock() == start + timedelta(hours=24)
    assert error is not None and error.startswith(f"gave up after {attempts} attempts")
    assert "421 4.3.2" in error
    assert len(await attempt_rows(resources, "mailto:tlsrpt@example.com")) == attempts
    assert env.smtp.messages == []


async def test_every_time_written_is_the_injected_clocks(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    env.https.statuses.append(503)
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=[env.https_rua()],
        next_attempt_at=env.clock(),
    )
    first = env.clock()
    assert await deliver(resources, owner="a", limit=10, jitter=lambda: 0.0) == 1
    last = env.clock.advance(seconds=60)
    assert await deliver(resources, owner="a", limit=10) == 1
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT first_attempt_at, last_attempt_at, sent_at FROM deliveries"
        )
        assert await cur.fetchone() == (first, last, last)
        cur = await conn.execute(
            "SELECT started_at, finished_at FROM delivery_attempts ORDER BY id"
        )
        assert await cur.fetchall() == [(first, first), (last, last)]


async def test_ssrf_targets_are_refused_and_the_reason_recorded(env: DeliveryEnv) -> None:
    resources = await env.open_resources(
        https=env.settings.https.model_copy(update={"allowed_networks": []})
    )
    env.resolver.answers["v6.test"] = ["::1"]
    ruas = ["https://127.0.0.1/", "https://10.0.0.1/", "https://v6.test/"]
    await store_report(
        resources, day=DAY, policy_domain="example.com", rua=ruas, next_attempt_at=env.clock()
    )
    assert await deliver(resources, owner="a", limit=10) == 3
    states = await delivery_states(resources)
    assert states["https://127.0.0.1/"][0] == "failed"
    assert "127.0.0.1 (loopback)" in (states["https://127.0.0.1/"][2] or "")
    assert "10.0.0.1 (private)" in (states["https://10.0.0.1/"][2] or "")
    assert "::1 (loopback)" in (states["https://v6.test/"][2] or "")
    [attempt] = await attempt_rows(resources, "https://10.0.0.1/")
    assert attempt[1] == "permanent" and "SSRF" in attempt[4]
    assert env.https.posts == []


async def test_two_instances_deliver_each_rua_exactly_once(env: DeliveryEnv) -> None:
    first = await env.open_resources()
    second = await env.open_resources()
    for n in range(60):
        await store_report(
            first,
            day=DAY,
            policy_domain=f"d{n}.example",
            rua=[f"mailto:r{n}@d{n}.example", env.https_rua(f"/d{n}")],
            next_attempt_at=env.clock(),
        )
    counts = await asyncio.gather(
        deliver(first, owner="one", limit=1000),
        deliver(second, owner="two", limit=1000),
    )
    assert sum(counts) == 120
    assert sorted(m.rcpt_tos[0] for m in env.smtp.messages) == sorted(
        f"r{n}@d{n}.example" for n in range(60)
    )
    assert sorted(p.path for p in env.https.posts) == sorted(f"/d{n}" for n in range(60))


async def test_a_dead_instances_lease_expires_and_another_delivers(env: DeliveryEnv) -> None:
    dying = await env.open_resources()
    survivor = await env.open_resources()
    await store_report(
        dying,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=env.clock(),
    )
    stuck = asyncio.Event()
    env.smtp.data_hook = stuck  # the relay accepts DATA, then never answers
    task = asyncio.create_task(deliver(dying, owner="dying", limit=10))
    await asyncio.wait_for(env.smtp.data_waiting.wait(), timeout=10)
    task.cancel()  # the instance dies mid-delivery
    with pytest.raises(asyncio.CancelledError):
        await task
    env.smtp.data_hook = None
    stuck.set()
    assert (await delivery_states(survivor))["mailto:tlsrpt@example.com"][0] == "sending"

    # Its lease (60 s) has not expired: nobody else touches the delivery.
    env.clock.advance(seconds=30)
    assert await deliver(survivor, owner="survivor", limit=10) == 0
    env.clock.advance(seconds=31)
    assert await deliver(survivor, owner="survivor", limit=10) == 1

    assert [m.rcpt_tos for m in env.smtp.messages] == [["tlsrpt@example.com"]]
    state, attempts, _ = (await delivery_states(survivor))["mailto:tlsrpt@example.com"]
    assert (state, attempts) == ("sent", 2)
    outcomes = [a[1] for a in await attempt_rows(survivor, "mailto:tlsrpt@example.com")]
    assert outcomes == ["lease_expired", "sent"]


async def test_an_outcome_from_a_lost_lease_is_not_recorded(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    await store_report(
        resources,
        day=DAY,
        policy_domain="example.com",
        rua=["mailto:tlsrpt@example.com"],
        next_attempt_at=env.clock(),
    )
    async with resources.pool.connection() as conn:
        [slow] = await store.claim_due_deliveries(
            conn, owner="slow", now=env.clock(), lease_seconds=60, limit=10
        )
        # The slow instance's lease runs out; another takes the delivery over.
        later = env.clock() + timedelta(seconds=61)
        [fast] = await store.claim_due_deliveries(
            conn, owner="fast", now=later, lease_seconds=60, limit=10
        )
        assert fast.id == slow.id and fast.attempts == 2
        stale = MarkRow(slow.id, "failed", AttemptRecord("permanent", slow.started_at))
        assert (
            await store.mark_deliveries_attempted(conn, owner="slow", now=later, outcomes=[stale])
            == set()
        )
        fresh = MarkRow(fast.id, "sent", AttemptRecord("sent", fast.started_at, 250))
        assert await store.mark_deliveries_attempted(
            conn, owner="fast", now=later, outcomes=[fresh]
        ) == {fast.id}
    state, attempts, _ = (await delivery_states(resources))["mailto:tlsrpt@example.com"]
    assert (state, attempts) == ("sent", 2)
    outcomes = [a[1] for a in await attempt_rows(resources, "mailto:tlsrpt@example.com")]
    assert outcomes == ["lease_expired", "sent"]
