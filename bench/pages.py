"""Web page benchmark: server time of every `/ui/` page at 10,000 policy domains in a day
and 10,000 received reports.

    python bench/pages.py [--database-url URL] [--domains 10000] [--received 10000]

Creates a scratch database (default: TLSRPT_DATABASE_URL, else
postgresql://postgres@127.0.0.1:5432/postgres), loads one day of results over `--domains`
policy domains through the ingest service and builds the day's reports (as
`bench/build_day.py` does: ~9,000 reports, ~18,000 deliveries), stores `--received`
reports from 50 organisations about 100 of our domains over 30 days through the inbound
service, signs in with an admin token, and then requests each page in process (httpx's
ASGI transport: the time is the server's, no network) once to warm up and `--runs` times
measured. Prints the median and the slowest time per page; the target is 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import psycopg
from psycopg import sql
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from build_day import DAY, InstantResolver, admin, clock, domain_name, load  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.pool import open_pool  # noqa: E402
from app.inbound.service import receive_report  # noqa: E402
from app.main import create_app  # noqa: E402
from app.report.service import build_day  # noqa: E402
from app.resources import Resources  # noqa: E402
from app.tokens.service import Scope, create_token  # noqa: E402

TARGET_MS = 200.0


def received(n: int) -> bytes:
    day = clock().date() - timedelta(days=n % 30)
    org = f"Sender{n % 50}"
    ours = f"our{n % 100}.example"
    return orjson.dumps(
        {
            "organization-name": org,
            "date-range": {
                "start-datetime": f"{day}T00:00:00Z",
                "end-datetime": f"{day}T23:59:59Z",
            },
            "contact-info": f"tlsrpt@{org.lower()}.example",
            "report-id": f"bench-{n}",
            "policies": [
                {
                    "policy": {
                        "policy-type": "sts",
                        "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{ours}"],
                        "policy-domain": ours,
                        "mx-host": [f"mx.{ours}"],
                    },
                    "summary": {
                        "total-successful-session-count": 1000 + n % 7,
                        "total-failure-session-count": n % 5,
                    },
                    "failure-details": [
                        {
                            "result-type": "certificate-expired",
                            "receiving-mx-hostname": f"mx.{ours}",
                            "receiving-ip": f"192.0.2.{n % 4 + 1}",
                            "failed-session-count": n % 5,
                        }
                    ]
                    if n % 5
                    else [],
                }
            ],
        }
    )


async def measure(url: str, received_count: int, runs: int) -> None:
    settings = Settings(database_url=SecretStr(url))
    pool = await open_pool(url, settings.database)
    resources = Resources(settings=settings, pool=pool, resolver=InstantResolver(), clock=clock)
    try:
        summary = await build_day(pool, resources.resolver, clock, settings.report, DAY)
        print(f"built {summary.built:,} reports ({summary.no_report:,} domains without)")
        started = time.perf_counter()
        for first in range(0, received_count, 500):
            await asyncio.gather(
                *(
                    receive_report(resources.inbound_committer, settings.inbound, received(n))
                    for n in range(first, min(first + 500, received_count))
                )
            )
        print(
            f"stored {received_count:,} received reports in {time.perf_counter() - started:.1f} s"
        )
        token = await create_token(pool, f"bench-{os.getpid()}", [Scope.ADMIN], clock=clock)
        app = create_app(settings, resources)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            form = await client.get("/ui/signin")
            found = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert found is not None
            answer = await client.post("/ui/signin", data={"csrf": found.group(1), "token": token})
            assert answer.status_code == 303, answer.text
            busy = domain_name(1)
            pages = [
                "/ui/",
                "/ui/outgoing",
                f"/ui/outgoing/{DAY}",
                f"/ui/outgoing/{DAY}?after={domain_name(5001)}",
                f"/ui/outgoing/{DAY}?order=failures&page=50",
                f"/ui/outgoing/{DAY}?order=failures&failing=true",
                f"/ui/outgoing/{DAY}?q=d99",
                f"/ui/outgoing/{DAY}/{busy}",
                "/ui/deliveries",
                "/ui/deliveries?state=pending&after=15000",
                "/ui/incoming",
                "/ui/incoming?organization=Sender7",
                "/ui/incoming?domain=our7.example",
                "/ui/incoming/domains/our7.example",
                "/ui/incoming/reports/5000",
                "/ui/suppressions",
                "/ui/config",
            ]
            print(f"{'page':55} {'median ms':>10} {'max ms':>8}")
            worst = 0.0
            for path in pages:
                assert (await client.get(path)).status_code == 200, path
                times = []
                for _ in range(runs):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == 200, path
                worst = max(worst, statistics.median(times))
                print(f"{path:55} {statistics.median(times):10.1f} {max(times):8.1f}")
            verdict = "within" if worst <= TARGET_MS else "OVER"
            print(f"slowest median {worst:.1f} ms: {verdict} the {TARGET_MS:.0f} ms target")
    finally:
        await resources.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TLSRPT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--domains", type=int, default=10_000)
    parser.add_argument("--results", type=int, default=200_000)
    parser.add_argument("--received", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", help="measure again on a database kept by --keep (its name)")
    args = parser.parse_args()
    name = args.reuse or f"tlsrpt_bench_pages_{os.getpid()}"
    info = psycopg.conninfo.conninfo_to_dict(args.database_url)
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
    if args.reuse:
        args.keep = True
    else:
        admin(args.database_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        if not args.reuse:
            upgrade(url)
            started = time.perf_counter()
            asyncio.run(load(url, args.domains, args.results))
            print(f"loaded {args.results:,} results in {time.perf_counter() - started:.1f} s")
        asyncio.run(measure(url, 0 if args.reuse else args.received, args.runs))
    finally:
        if args.keep:
            print(f"kept the database: {url}")
        else:
            admin(
                args.database_url,
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
            )


if __name__ == "__main__":
    main()
