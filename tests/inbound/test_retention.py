"""Retention of received reports: TLSRPT_RETENTION__INBOUND_DAYS, on the fake clock."""

from __future__ import annotations

from pathlib import Path

from app.inbound import service
from app.resources import Resources
from tests.clock import FakeClock
from tests.delivery.conftest import dkim_pair, env, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import DeliveryEnv
from tests.services import SchedulerOn

SAMPLES = Path(__file__).parent.parent / "samples"
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
OTHER = RFC.replace(b"5065427c-23d3-47ca-b6e0-946ea0e8c4be", b"another-report")


async def stored(res: Resources) -> list[str]:
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT report_id FROM inbound_reports ORDER BY id")
        return [str(row[0]) for row in await cur.fetchall()]


async def test_reports_are_kept_inbound_days_after_receipt(
    resources: Resources, clock: FakeClock
) -> None:
    # A report about 2016 received today is kept from today on, not from 2016.
    await service.receive_report(resources.inbound_committer, resources.settings.inbound, RFC)
    retention = resources.settings.retention
    assert retention.inbound_days == 400
    assert await service.purge_expired(resources.pool, clock, retention) == 0
    clock.advance(days=400)
    assert await service.purge_expired(resources.pool, clock, retention) == 0
    clock.advance(seconds=1)
    assert await service.purge_expired(resources.pool, clock, retention) == 1
    assert await stored(resources) == []


async def test_the_schedulers_daily_purge_deletes_old_received_reports(
    env: DeliveryEnv,  # noqa: F811
) -> None:
    resources = await env.open_resources()
    inbound = resources.settings.inbound
    await service.receive_report(resources.inbound_committer, inbound, RFC)
    env.clock.advance(days=300)
    await service.receive_report(resources.inbound_committer, inbound, OTHER)
    env.clock.advance(days=101)
    await SchedulerOn(resources, owner="one", rand=lambda: 0.0).run_once()
    assert await stored(resources) == ["another-report"]
