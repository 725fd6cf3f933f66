"""A day end to end: results posted over HTTP, the injected clock moved past midnight, the
scheduler closes and builds the day, and the report arrives by mail at aiosmtpd (checked
header by header, DKIM-verified in RFC 8460 mode) and by HTTPS POST at a loopback server;
the status API then shows every delivery and attempt."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import dkim
import httpx
import pytest

from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests import services
from tests.clock import FakeClock
from tests.conftest import bearer
from tests.delivery.certs import LoopbackCa, make_dkim_key_pair, make_test_ca
from tests.delivery.env import DeliveryEnv, delivery_env
from tests.dns.fake_resolver import FakeResolver
from tests.services import SchedulerOn


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoopbackCa, bytes, bytes]:
    pem, record = make_dkim_key_pair()
    return make_test_ca(tmp_path_factory.mktemp("e2e-ca")), pem, record


@pytest.fixture
async def env(
    database_url: str, tmp_path: Path, keys: tuple[LoopbackCa, bytes, bytes]
) -> AsyncIterator[DeliveryEnv]:
    # Every time the service writes or compares is the injected clock's: the whole day,
    # its close, the build and the deliveries run on a fake clock far from the real one.
    clock = FakeClock(datetime(2025, 3, 9, 23, 0, tzinfo=UTC))
    async with delivery_env(database_url, tmp_path, keys[0], keys[1], clock) as e:
        yield e


def dkim_dns(record: bytes) -> Callable[..., bytes | None]:
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name.rstrip(b".") == b"sel._domainkey.sender.example" else None

    return lookup


def result(ts: datetime, result_type: str, count: int) -> dict[str, object]:
    item: dict[str, object] = {
        "policy": {
            "policy-type": "sts",
            "policy-domain": "example.com",
            "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.com"],
            "mx-host": ["mx.example.com"],
        },
        "result-type": result_type,
        "timestamp": ts.isoformat().replace("+00:00", "Z"),
        "count": count,
    }
    if result_type != "success":
        item |= {"receiving-mx-hostname": "mx.example.com", "receiving-ip": "203.0.113.7"}
    return item


async def test_a_day_is_built_sent_and_visible(
    env: DeliveryEnv, keys: tuple[LoopbackCa, bytes, bytes]
) -> None:
    window = 3600
    resources = await env.open_resources(
        scheduler=env.settings.scheduler.model_copy(
            update={"grace_seconds": 900, "send_window_seconds": window}
        )
    )
    dns = FakeResolver()
    dns.publish("example.com", f"v=TLSRPTv1; rua=mailto:tlsrpt@example.com,{env.https_rua()}")
    resources.resolver = dns
    day = env.clock().date()
    app = create_app(resources.settings, resources)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ingest = bearer(await create_token(resources.pool, "mta", [Scope.INGEST], clock=env.clock))
        read = bearer(await create_token(resources.pool, "ops", [Scope.READ], clock=env.clock))
        ts = env.clock() - timedelta(seconds=1)
        posted = await client.post(
            "/v1/results",
            json={"results": [result(ts, "success", 40), result(ts, "certificate-expired", 2)]},
            headers=ingest,
        )
        assert posted.status_code == 200, posted.text

        scheduler = SchedulerOn(resources, owner="e2e", rand=lambda: 0.5)
        midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)
        # Past midnight but inside the grace period: the day stays open.
        env.clock.set(midnight + timedelta(seconds=899))
        assert (await scheduler.run_once()).built_days == []
        built_at = midnight + timedelta(seconds=901)
        env.clock.set(built_at)
        first = await scheduler.run_once()
        assert first.built_days == [day]

        # Closed: late results for the day are refused.
        late = await client.post(
            "/v1/results", json={"results": [result(ts, "success", 1)]}, headers=ingest
        )
        assert late.status_code == 409
        # Spread over the send window (RFC 8460 §4.1): due half a window after building.
        pending = (await client.get(f"/v1/deliveries?day={day}", headers=read)).json()
        assert [d["state"] for d in pending["deliveries"]] == ["pending", "pending"]
        for delivery in pending["deliveries"]:
            assert delivery["attempts"] == 0
        assert (await scheduler.run_once()).delivered == 0
        preview = await client.get(
            f"/v1/reports/preview?policy_domain=example.com&day={day}", headers=read
        )
        assert preview.status_code == 200

        env.clock.set(built_at + timedelta(seconds=window / 2 + 60))
        second = await scheduler.run_once()
        assert second.delivered == 2
        assert (await scheduler.run_once()).delivered == 0

        sent = (await client.get(f"/v1/deliveries?state=sent&day={day}", headers=read)).json()
        assert {d["rua"] for d in sent["deliveries"]} == {
            "mailto:tlsrpt@example.com",
            env.https_rua(),
        }
        report_pk = sent["deliveries"][0]["report_pk"]
        detail = (await client.get(f"/v1/reports/{report_pk}/deliveries", headers=read)).json()
        for delivery in detail["deliveries"]:
            [attempt] = delivery["attempt_log"]
            assert attempt["outcome"] == "sent"
            assert (attempt["smtp_reply_code"] or attempt["http_status"]) in (200, 250)
        metrics = (await client.get("/metrics")).text
        assert 'tlsrpt_deliveries_sent_total{kind="mailto"}' in metrics

    [mail] = env.smtp.messages
    assert mail.mail_from == "reports@sender.example"
    assert mail.rcpt_tos == ["tlsrpt@example.com"]
    assert dkim.verify(mail.content, dnsfunc=dkim_dns(keys[2]), tlsrpt="strict")
    message = BytesParser(policy=policy.default).parsebytes(mail.content)
    assert isinstance(message, EmailMessage)
    report_id = preview.json()["report-id"]
    assert message["From"] == "reports@sender.example"
    assert message["To"] == "tlsrpt@example.com"
    assert message["Subject"] == (
        f"Report Domain: example.com Submitter: sender.example Report-ID: <{report_id}>"
    )
    assert message["TLS-Report-Domain"] == "example.com"
    assert message["TLS-Report-Submitter"] == "sender.example"
    assert message["TLS-Required"] == "No"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert message["Message-ID"].endswith("@sender.example>")
    assert abs((message["Date"].datetime - env.clock()).total_seconds()) < 5
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    start = int(datetime.combine(day, time(0), tzinfo=UTC).timestamp())
    filename = attachment.get_filename()
    assert filename is not None
    assert filename.startswith(f"sender.example!example.com!{start}!{start + 86399}")
    assert filename.endswith(".json.gz")
    assert gzip.decompress(attachment.get_content()) == preview.content

    [post] = env.https.posts
    assert post.content_type == "application/tlsrpt+gzip"
    assert post.path == "/tlsrpt"
    assert gzip.decompress(post.body) == preview.content


async def test_send_reports_false_builds_but_sends_nothing(env: DeliveryEnv) -> None:
    resources: Resources = await env.open_resources(send_reports=False)
    dns = FakeResolver()
    dns.publish("example.com", f"v=TLSRPTv1; rua=mailto:tlsrpt@example.com,{env.https_rua()}")
    resources.resolver = dns
    from app.tlsrpt.model import Policy, PolicyType
    from app.tlsrpt.tally import Tally

    day = env.clock().date()
    tally = Tally()
    tally.add_session(day, Policy(PolicyType.NO_POLICY_FOUND, "example.com"), None)
    await services.record(resources, tally)
    env.clock.set(datetime.combine(day + timedelta(days=2), time(0), tzinfo=UTC))
    scheduler = SchedulerOn(resources, owner="off", rand=lambda: 0.0)
    assert (await scheduler.run_once()).built_days == [day]
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT state, last_error FROM deliveries ORDER BY rua")
        rows = await cur.fetchall()
    assert [r[0] for r in rows] == ["disabled", "disabled"]
    assert "TLSRPT_SEND_REPORTS=false" in str(rows[0][1])
    assert env.smtp.messages == [] and env.https.posts == []
