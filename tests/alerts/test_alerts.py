"""Alerts end to end: conditions from both directions raised once and resolved, one
digest to a real HTTPS webhook receiver (signature checked) and to an aiosmtpd sink, on
the fake clock."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.alerts import gauges
from app.alerts import service as alerts
from app.config import AlertSettings
from app.inbound.service import receive_report
from app.ingest.service import SessionResult, record_results, record_tally
from app.main import create_app
from app.resources import Resources
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.tally import Tally
from app.tokens.service import Scope, create_token
from tests.alerts.conftest import MAIL_TO, SECRET, alert_settings
from tests.conftest import bearer
from tests.delivery.env import DeliveryEnv, deliver, store_report
from tests.delivery.sinks import ReceivedPost
from tests.services import SchedulerOn

SAMPLES = Path(__file__).parent.parent / "samples"
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
EXPIRED = FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.broken.example")


def results(domain: str, *, ok: int, failed: int) -> list[SessionResult]:
    policy = Policy(PolicyType.STS, domain, ("version: STSv1", "mode: enforce"), ("mx.x",))
    out = []
    if ok:
        out.append(SessionResult(policy, FailureDetail(ResultType.SUCCESS), count=ok))
    if failed:
        out.append(SessionResult(policy, EXPIRED, count=failed))
    return out


async def ingest(res: Resources, domain: str, *, ok: int, failed: int) -> None:
    await record_results(
        res.committer, res.clock, res.settings, results(domain, ok=ok, failed=failed)
    )


async def run_round(res: Resources) -> alerts.Round:
    return await alerts.run_round(
        res.pool, res.open_senders(), res.clock, res.settings, owner="test", jitter=lambda: 0.0
    )


def verify(post: ReceivedPost) -> dict[str, Any]:
    """Check the signature as a receiver would, and return the payload."""
    fields = dict(part.split("=", 1) for part in post.headers["x-tlsrpt-signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), fields["t"].encode() + b"." + post.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    assert post.content_type == "application/json"
    payload: dict[str, Any] = orjson.loads(post.body)
    return payload


async def test_failed_burst_gives_one_alert_one_webhook_one_mail(
    env: DeliveryEnv, res: Resources
) -> None:
    await ingest(res, "fine.example", ok=500, failed=0)
    await ingest(res, "broken.example", ok=10, failed=90)

    first = await run_round(res)
    assert first.raised["outgoing_spike"] == 1
    assert first.notifications_queued == 2 and first.notifications_sent == 2
    [post] = env.https.posts
    assert post.path == "/hook"
    payload = verify(post)
    assert payload["total"] == 1
    assert "broken.example" in str(payload["text"]) and "90 of 100" in str(payload["text"])
    [alert] = payload["alerts"]
    assert alert["kind"] == "outgoing_spike" and alert["subject"] == "broken.example"
    [mail] = env.smtp.messages
    assert mail.rcpt_tos == [MAIL_TO]
    message = message_from_bytes(mail.content)
    assert "1 new alert" in str(message["Subject"])
    assert "broken.example" in str(message.get_payload())

    # A minute later the same condition holds: nothing new is raised or sent.
    env.clock.advance(minutes=1)
    await ingest(res, "broken.example", ok=0, failed=50)
    again = await run_round(res)
    assert again.raised["outgoing_spike"] == 0 and again.notifications_queued == 0
    assert len(env.https.posts) == 1 and len(env.smtp.messages) == 1

    # Visible in the API (scope read).
    token = await create_token(res.pool, "reader", [Scope.READ], clock=res.clock)
    app = create_app(res.settings, res)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        listed = await client.get("/v1/alerts?state=open", headers=bearer(token))
        assert listed.status_code == 200, listed.text
        [row] = listed.json()["alerts"]
        assert row["kind"] == "outgoing_spike" and row["resolved_at"] is None
        assert row["details"]["failed_sessions"] == 90  # refreshed every 15 minutes
        refused = await client.get("/v1/alerts?state=bogus", headers=bearer(token))
        assert refused.status_code == 422

    # Two hours on, the last hour is clean: the alert is resolved.
    env.clock.advance(hours=2)
    await ingest(res, "broken.example", ok=100, failed=0)
    cleared = await run_round(res)
    assert cleared.resolved["outgoing_spike"] == 1
    assert await alerts.list_alerts(res.pool, open_only=True) == []


async def test_baseline_keeps_a_usual_failure_rate_quiet(env: DeliveryEnv, res: Resources) -> None:
    # A domain that always fails 20 % (at spike_min_rate) is not a spike; 100 % is.
    for _ in range(6):
        await ingest(res, "flaky.example", ok=80, failed=20)
        env.clock.advance(hours=1)
    await ingest(res, "flaky.example", ok=80, failed=20)
    assert (await run_round(res)).raised["outgoing_spike"] == 0
    env.clock.advance(hours=2)
    await ingest(res, "flaky.example", ok=0, failed=100)
    assert (await run_round(res)).raised["outgoing_spike"] == 1


async def test_received_report_with_failures(env: DeliveryEnv, res: Resources) -> None:
    await receive_report(res.inbound_committer, res.settings.inbound, gzip.compress(RFC))
    result = await run_round(res)
    assert result.raised["incoming_failures"] == 1
    [alert] = await alerts.list_alerts(res.pool)
    assert alert.subject == "company-y.example"
    assert alert.details["result_types"] == [
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    ]
    assert alert.details["organizations"] == ["Company-X"]
    assert "mx1.mail.company-y.example" in alert.details["receiving_mx_hosts"]
    assert alert.details["failed_sessions"] == 303
    payload = verify(env.https.posts[0])
    assert "company-y.example" in str(payload["text"])
    assert len(env.smtp.messages) == 1

    # The same report again (a resend) raises nothing new.
    await receive_report(res.inbound_committer, res.settings.inbound, RFC)
    env.clock.advance(minutes=1)
    assert (await run_round(res)).raised["incoming_failures"] == 0
    assert len(env.https.posts) == 1

    # A day later no recent report shows failures: resolved.
    env.clock.advance(hours=25)
    assert (await run_round(res)).resolved["incoming_failures"] == 1


async def test_share_threshold(env: DeliveryEnv) -> None:
    res = await env.open_resources(alerts=alert_settings(env, incoming_min_share=0.1))
    await receive_report(res.inbound_committer, res.settings.inbound, RFC)  # 303 of 5629
    assert (await run_round(res)).raised["incoming_failures"] == 0


async def test_storm_of_failing_domains_is_a_bounded_digest(
    env: DeliveryEnv, res: Resources
) -> None:
    policies = [Policy(PolicyType.STS, f"d{i}.storm.example") for i in range(10_000)]
    tally = Tally()
    day = env.clock().date()
    for policy in policies:
        tally.add_counts(day, policy, successes=0, failures=60, details={EXPIRED: 60})
    await record_tally(res.committer, res.clock, res.settings, tally)

    first = await run_round(res)
    assert first.raised["outgoing_spike"] == 10_000
    [post] = env.https.posts
    payload = verify(post)
    assert payload["total"] == 10_000 and payload["omitted"] == 10_000 - 20
    assert len(payload["alerts"]) == 20
    assert len(env.smtp.messages) == 1

    # More domains fail through the hour; rounds every few minutes: digests stay few.
    for minute in range(6, 61, 6):
        env.clock.advance(minutes=6)
        more = Tally()
        for i in range(20):
            p = Policy(PolicyType.STS, f"m{minute}-{i}.storm.example")
            more.add_counts(env.clock().date(), p, successes=0, failures=60, details={EXPIRED: 60})
        await record_tally(res.committer, res.clock, res.settings, more)
        await run_round(res)
    # 10 rounds raised alerts; one digest at most every 5 minutes: 1 + 60/5 per target.
    assert len(env.https.posts) <= 13 and len(env.smtp.messages) <= 13
    # What the last rounds raised goes out with the next digest.
    env.clock.advance(minutes=5)
    await run_round(res)
    totals = [verify(p)["total"] for p in env.https.posts]
    assert sum(totals) == 10_000 + 10 * 20

    # The metrics stay bounded: no series per failing domain.
    await gauges.refresh(res.pool, res.clock, res.settings)
    families = list(text_string_to_metric_families(generate_latest().decode()))
    samples = [s for f in families for s in f.samples]
    assert len(samples) < 1000
    values = {s.name: s.value for s in samples if not s.labels}
    assert values["tlsrpt_failing_policy_domains"] == 10_200
    assert not any("storm.example" in str(s.labels) for s in samples)


async def test_silence_while_results_usually_arrive(env: DeliveryEnv, res: Resources) -> None:
    # No history: no silence alert.
    assert (await run_round(res)).raised["silence"] == 0
    for _ in range(12):
        await ingest(res, "steady.example", ok=10, failed=0)
        env.clock.advance(hours=1)
    env.clock.advance(minutes=30)  # 90 minutes since the last result
    result = await run_round(res)
    assert result.raised["silence"] == 1
    [alert] = await alerts.list_alerts(res.pool, kind="silence")
    assert "no results ingested since" in alert.summary
    env.clock.advance(minutes=5)
    await ingest(res, "steady.example", ok=10, failed=0)
    assert (await run_round(res)).resolved["silence"] == 1


async def test_delivery_trouble(env: DeliveryEnv, res: Resources) -> None:
    day = env.clock().date() - timedelta(days=1)
    dead = env.https_rua("/dead")
    await store_report(
        res, day=day, policy_domain="a.example", rua=[dead], next_attempt_at=env.clock()
    )
    env.https.statuses = [404]
    await deliver(res, owner="t", limit=10)
    result = await run_round(res)
    assert result.raised["delivery_failed"] == 1
    [alert] = await alerts.list_alerts(res.pool, kind="delivery_failed")
    assert alert.subject == dead and "404" in alert.summary

    # A day whose reports were built over 24 hours ago and are not all delivered.
    async with res.pool.connection() as conn:
        await conn.execute(
            "UPDATE reports SET created_at = %(at)s", {"at": env.clock() - timedelta(hours=25)}
        )
    env.clock.advance(minutes=10)
    result = await run_round(res)
    assert result.raised["day_undelivered"] == 1
    [alert] = await alerts.list_alerts(res.pool, kind="day_undelivered")
    assert alert.subject == day.isoformat()


async def test_webhook_retried_then_sent_and_ssrf_refused(env: DeliveryEnv) -> None:
    private = "https://internal.test/hook"
    env.resolver.answers["internal.test"] = ["10.1.2.3"]
    res = await env.open_resources(
        alerts=alert_settings(env, webhook_urls=[env.https_rua("/hook"), private], mail_to=[])
    )
    env.https.statuses = [503]
    await ingest(res, "broken.example", ok=0, failed=100)
    first = await run_round(res)
    assert first.notifications_queued == 2 and first.notifications_sent == 0
    assert env.https.posts == []
    env.clock.advance(seconds=59)
    assert (await run_round(res)).notifications_sent == 0  # backoff: 60 s
    env.clock.advance(seconds=2)
    assert (await run_round(res)).notifications_sent == 1
    assert verify(env.https.posts[0])["total"] == 1
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT state, last_error FROM alert_notifications WHERE target = %(t)s",
            {"t": private},
        )
        state, error = await cur.fetchone()  # type: ignore[misc]
    assert state == "failed" and "SSRF" in error


async def test_test_notification(env: DeliveryEnv, res: Resources) -> None:
    queued, rows = await alerts.send_test(
        res.pool, res.open_senders(), res.clock, res.settings.alerts, owner="t"
    )
    assert queued == 2 and {r.state for r in rows} == {"sent"}
    assert "test notification" in str(verify(env.https.posts[0])["text"])
    assert len(env.smtp.messages) == 1


async def test_no_targets_stores_alerts_only(env: DeliveryEnv) -> None:
    res = await env.open_resources(alerts=AlertSettings())
    await ingest(res, "broken.example", ok=0, failed=100)
    result = await run_round(res)
    assert result.raised["outgoing_spike"] == 1 and result.notifications_queued == 0
    [alert] = await alerts.list_alerts(res.pool)
    assert alert.notified_at is not None


async def test_instances_raise_and_notify_once(env: DeliveryEnv) -> None:
    # Two instances (own pools) run their scheduler rounds at the same time.
    one, two = [await env.open_resources(alerts=alert_settings(env)) for _ in range(2)]
    await ingest(one, "broken.example", ok=0, failed=100)
    rounds = await asyncio.gather(SchedulerOn(one).run_once(), SchedulerOn(two).run_once())
    raised = [r.alerts.raised["outgoing_spike"] for r in rounds if r.alerts is not None]
    assert sorted(raised) == [0, 1]
    assert len(env.https.posts) == 1 and len(env.smtp.messages) == 1
    assert len(await alerts.list_alerts(one.pool)) == 1
