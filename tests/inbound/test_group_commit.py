"""Group commit of received reports: copies in one group, failures, concurrent POSTs."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
from pathlib import Path

import httpx
import orjson
import pytest
from psycopg import errors

from app.config import InboundSettings
from app.inbound import service
from app.inbound.group_commit import ReportCommitter
from app.inbound.service import Via
from app.inbound.store import NewReport
from app.resources import Resources
from tests.clock import FakeClock

SAMPLES = Path(__file__).parent.parent / "samples"
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
GZIP = {"Content-Type": "application/tlsrpt+gzip"}


def new_report(report_id: str, via: Via = Via.HTTPS) -> NewReport:
    doc = orjson.loads(RFC)
    doc["report-id"] = report_id
    data, report = service.read_report_body(orjson.dumps(doc), InboundSettings())
    policies, failures = service._policy_rows(report)
    return NewReport(service._report_row(report, data, via, None, None), policies, failures)


async def stored(resources: Resources) -> list[tuple[int, str, int, int]]:
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT r.id, r.report_id, r.times_received,"
            " (SELECT count(*) FROM inbound_policies p WHERE p.report_pk = r.id)"
            " FROM inbound_reports r ORDER BY r.id"
        )
        return [(int(i), str(r), int(t), int(n)) for i, r, t, n in await cur.fetchall()]


async def test_copies_in_one_group_are_stored_once(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    # One writer, and every insert queued before it runs: one group of three.
    committer = ReportCommitter(resources.pool, resources.clock, writers=1)
    try:
        results = await asyncio.gather(
            committer.insert(new_report("a")),
            committer.insert(new_report("b")),
            committer.insert(new_report("a", Via.MAIL)),
        )
        a, b, a_again = results
        assert a[1] is True and b[1] is True
        assert a_again == (a[0], False)
        rows = await stored(resources)
        assert sorted(rows) == sorted([(a[0], "a", 2, 1), (b[0], "b", 1, 1)])

        # Copies of a stored report, again in one group: both duplicates, counted.
        again = await asyncio.gather(
            committer.insert(new_report("a")), committer.insert(new_report("a"))
        )
        assert list(again) == [(a[0], False), (a[0], False)]
        assert (a[0], "a", 4, 1) in await stored(resources)
        # Written as groups: no group failed and fell back to one report at a time.
        assert "inbound_group_failed" not in caplog.messages
    finally:
        await committer.close()


async def test_receipt_times_are_the_clocks(resources: Resources, clock: FakeClock) -> None:
    committer = ReportCommitter(resources.pool, clock)
    try:
        first = clock()
        await committer.insert(new_report("a"))
        later = clock.advance(hours=1)
        await committer.insert(new_report("a"))
    finally:
        await committer.close()
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT received_at, last_received_at FROM inbound_reports")
        assert await cur.fetchall() == [(first, later)]


async def test_report_the_database_refuses_fails_alone(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    committer = ReportCommitter(resources.pool, resources.clock, writers=1)
    bad = new_report("bad")
    bad = dataclasses.replace(bad, row=dict(bad.row, received_via="carrier-pigeon"))
    try:
        good, refused, other = await asyncio.gather(
            committer.insert(new_report("good")),
            committer.insert(bad),
            committer.insert(new_report("other")),
            return_exceptions=True,
        )
        assert isinstance(refused, errors.CheckViolation)
        assert isinstance(good, tuple) and isinstance(other, tuple)
        assert {r[1] for r in await stored(resources)} == {"good", "other"}
        assert "inbound_group_failed" in caplog.messages
    finally:
        await committer.close()


async def test_concurrent_posts_of_one_report(
    client: httpx.AsyncClient, resources: Resources, rua: str
) -> None:
    body = gzip.compress(RFC)
    responses = await asyncio.gather(
        *(client.post(rua, content=body, headers=GZIP) for _ in range(5))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert [(row[2], row[3]) for row in await stored(resources)] == [(5, 1)]


@pytest.mark.parametrize("reports", [1, 40])
async def test_many_concurrent_reports_all_stored(
    client: httpx.AsyncClient, resources: Resources, rua: str, reports: int
) -> None:
    doc = orjson.loads(RFC)
    bodies = [
        gzip.compress(orjson.dumps(dict(doc, **{"report-id": f"r{n}"}))) for n in range(reports)
    ]
    responses = await asyncio.gather(
        *(client.post(rua, content=body, headers=GZIP) for body in bodies)
    )
    assert {r.status_code for r in responses} == {201}
    ids = {r.json()["id"] for r in responses}
    assert sorted(ids) == [row[0] for row in await stored(resources)]
