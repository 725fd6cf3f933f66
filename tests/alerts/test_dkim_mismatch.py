"""dkim_mismatch: the scheduler compares the key report mail is signed with and the key a
loopback DNS server publishes, hourly on the fake clock: raised once (one digest), kept
while DNS can not answer, resolved when DNS matches again; never without a key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.alerts import service as alerts
from app.alerts.conditions import DKIM_MISMATCH, DkimWatch
from app.config import DkimSettings, DnsSettings
from app.dns.resolver import DnsResolver
from app.dnscheck.dkim import format_dkim_record, public_key_der
from app.resources import Resources
from app.scheduler.service import Scheduler
from tests.alerts.conftest import alert_settings
from tests.delivery.certs import make_dkim_key_pair
from tests.delivery.env import DeliveryEnv
from tests.dnscheck.zone_server import ZoneData, zone_server

NAME = "sel._domainkey.sender.example."


def published(pem: bytes) -> list[str]:
    """The TXT rdata (zone-file strings) publishing the public half of `pem`."""
    line = format_dkim_record("sel", "sender.example", public_key_der(pem))
    return [line.split(" IN TXT ", 1)[1]]


@pytest.fixture
def zone(dkim_pair: tuple[bytes, bytes]) -> Iterator[tuple[ZoneData, int]]:
    data = ZoneData({(NAME, "TXT"): published(dkim_pair[0])})
    with zone_server(data) as port:
        yield data, port


def resolver_at(env: DeliveryEnv, port: int) -> DnsResolver:
    # The resolver's cache runs on the fake clock too.
    return DnsResolver(
        DnsSettings(nameservers=[f"127.0.0.1:{port}"], timeout_seconds=0.5),
        monotonic=lambda: env.clock().timestamp(),
    )


def scheduler(res: Resources, resolver: DnsResolver) -> Scheduler:
    return Scheduler(
        res.pool, resolver, res.open_senders(), res.clock, res.settings, owner="t", rand=lambda: 0.0
    )


async def test_another_key_in_dns_raises_once_and_matching_again_resolves(
    env: DeliveryEnv, res: Resources, zone: tuple[ZoneData, int], dkim_pair: tuple[bytes, bytes]
) -> None:
    data, port = zone
    worker = scheduler(res, resolver_at(env, port))

    first = (await worker.run_once()).alerts
    assert first is not None and first.raised[DKIM_MISMATCH] == 0
    assert data.queries == [f"{NAME} TXT"]

    other_pem, _ = make_dkim_key_pair()
    data.records[NAME, "TXT"] = published(other_pem)
    env.clock.advance(minutes=1)  # not due: DNS is not asked, nothing changes
    quiet = (await worker.run_once()).alerts
    assert quiet is not None and DKIM_MISMATCH not in quiet.raised
    assert len(data.queries) == 1

    env.clock.advance(hours=1)
    raised = (await worker.run_once()).alerts
    assert raised is not None and raised.raised[DKIM_MISMATCH] == 1
    assert raised.notifications_queued == 2  # one digest: the webhook and the mail
    [alert] = await alerts.list_alerts(res.pool, open_only=True)
    assert alert.kind == DKIM_MISMATCH and alert.subject == NAME.rstrip(".")
    assert "does not match the configured private key" in alert.summary
    assert alert.details["record_to_publish"].split(" IN TXT ", 1)[1] == published(dkim_pair[0])[0]
    [post] = env.https.posts
    assert b"dkim_mismatch" in post.body
    assert len(env.smtp.messages) == 1

    env.clock.advance(hours=1)  # still another key: still the one alert, no new digest
    again = (await worker.run_once()).alerts
    assert again is not None and again.raised[DKIM_MISMATCH] == 0
    assert len(env.https.posts) == 1

    # DNS can not answer (nothing listens there): neither raised nor resolved.
    with zone_server(ZoneData({})) as gone:
        pass
    blind = scheduler(res, resolver_at(env, gone))
    env.clock.advance(hours=1)
    unknown = (await blind.run_once()).alerts
    assert unknown is not None and DKIM_MISMATCH not in unknown.raised
    assert DKIM_MISMATCH not in unknown.resolved
    assert len(await alerts.list_alerts(res.pool, open_only=True)) == 1

    data.records[NAME, "TXT"] = published(dkim_pair[0])
    env.clock.advance(hours=1)
    cleared = (await worker.run_once()).alerts
    assert cleared is not None and cleared.resolved[DKIM_MISMATCH] == 1
    assert await alerts.list_alerts(res.pool, open_only=True) == []


async def test_no_key_configured_is_no_alert(env: DeliveryEnv, zone: tuple[ZoneData, int]) -> None:
    data, port = zone
    data.records[NAME, "TXT"] = published(make_dkim_key_pair()[0])
    res = await env.open_resources(dkim=DkimSettings(), alerts=alert_settings(env))
    worker = scheduler(res, resolver_at(env, port))
    result = (await worker.run_once()).alerts
    assert result is not None and result.raised[DKIM_MISMATCH] == 0
    assert data.queries == []  # nothing to compare: DNS is not asked
    assert await alerts.list_alerts(res.pool) == []
    assert env.https.posts == []


async def test_cli_round_checks_at_once(
    env: DeliveryEnv, res: Resources, zone: tuple[ZoneData, int]
) -> None:
    """A watch made for one round (as `tlsrpt alerts evaluate` makes it) asks DNS now."""
    data, port = zone
    data.records[NAME, "TXT"] = ['"v=DKIM1; p="']  # revoked
    watch = DkimWatch(res.open_senders().dkim_key, resolver_at(env, port))
    result = await alerts.run_round(
        res.pool, res.open_senders(), res.clock, res.settings, owner="cli", dkim=watch
    )
    assert result.raised[DKIM_MISMATCH] == 1
    [alert] = await alerts.list_alerts(res.pool, open_only=True)
    assert "revoked" in alert.summary
