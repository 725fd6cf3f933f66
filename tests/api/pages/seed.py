"""A seeded database for the page tests: both directions, through the real entry points.

Results go in through `POST /v1/results`, received reports through the rua endpoint;
built reports and their deliveries are stored as the reports contract defines them
(`tests.delivery.env.store_report`), with one delivery failed after an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import httpx
import orjson

from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.conftest import bearer
from tests.delivery.env import store_report


@dataclass(frozen=True)
class Seeded:
    today: date
    yesterday: date
    admin: str
    read: str
    report_pk: int
    failed_delivery: int
    failed_rua: str


def result_item(day: date, domain: str, result_type: str, count: int) -> dict[str, object]:
    item: dict[str, object] = {
        "policy": {
            "policy-type": "sts",
            "policy-domain": domain,
            "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{domain}"],
            "mx-host": [f"mx.{domain}"],
        },
        "result-type": result_type,
        "timestamp": f"{day.isoformat()}T10:00:00Z",
        "count": count,
    }
    if result_type != "success":
        item.update({"receiving-mx-hostname": f"mx.{domain}", "receiving-ip": "198.51.100.7"})
    return item


def received_report(day: date, org: str, n: int) -> bytes:
    return orjson.dumps(
        {
            "organization-name": org,
            "date-range": {
                "start-datetime": f"{day.isoformat()}T00:00:00Z",
                "end-datetime": f"{day.isoformat()}T23:59:59Z",
            },
            "contact-info": f"tlsrpt@{org.lower()}.example",
            "report-id": f"{day.isoformat()}-{org}-{n}",
            "policies": [
                {
                    "policy": {
                        "policy-type": "sts",
                        "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.our.example"],
                        "policy-domain": "our.example",
                        "mx-host": ["mx.our.example"],
                    },
                    "summary": {
                        "total-successful-session-count": 100 + n,
                        "total-failure-session-count": n,
                    },
                    "failure-details": [
                        {
                            "result-type": "certificate-expired",
                            "sending-mta-ip": "203.0.113.9",
                            "receiving-mx-hostname": "mx.our.example",
                            "receiving-ip": "192.0.2.25",
                            "failed-session-count": n,
                        }
                    ],
                }
            ],
        }
    )


async def seed(resources: Resources, client: httpx.AsyncClient) -> Seeded:
    clock = resources.clock
    today = clock().date()
    yesterday = today - timedelta(days=1)
    tokens = {}
    for scope in (Scope.ADMIN, Scope.READ, Scope.INGEST, Scope.INBOUND):
        tokens[scope] = await create_token(
            resources.pool, f"seed-{scope.value}", [scope], clock=clock
        )
    results = []
    for day in (yesterday, today):
        results += [
            result_item(day, "example.com", "success", 900),
            result_item(day, "example.com", "certificate-expired", 100),
            result_item(day, "example.net", "success", 50),
            result_item(day, "failing.example", "starttls-not-supported", 7),
        ]
    answer = await client.post(
        "/v1/results", json={"results": results}, headers=bearer(tokens[Scope.INGEST])
    )
    assert answer.status_code == 200, answer.text
    for n, day in enumerate(today - timedelta(days=d) for d in (0, 3, 10)):
        for org in ("Google", "Microsoft"):
            answer = await client.post(
                f"/v1/tlsrpt/{tokens[Scope.INBOUND]}",
                content=received_report(day, org, n + 1),
                headers={"Content-Type": "application/tlsrpt+json"},
            )
            assert answer.status_code == 201, answer.text
    failed_rua = "https://reports.failing.example/tlsrpt"
    pk = await store_report(
        resources,
        day=yesterday,
        policy_domain="failing.example",
        rua=["mailto:tlsrpt@failing.example", failed_rua],
        next_attempt_at=clock() + timedelta(hours=1),
        report_json=b'{"organization-name":"seed","report-id":"seeded-1"}',
    )
    async with resources.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            """
            UPDATE deliveries SET state = 'failed', attempts = 1, first_attempt_at = %(now)s,
                last_attempt_at = %(now)s, last_error = 'HTTP 404'
            WHERE report_pk = %(pk)s AND rua = %(rua)s RETURNING id
            """,
            {"pk": pk, "rua": failed_rua, "now": clock()},
        )
        row = await cur.fetchone()
        assert row is not None
        failed = int(row[0])
        await conn.execute(
            """
            INSERT INTO delivery_attempts (delivery_id, attempt, started_at, finished_at,
                outcome, http_status, reason, excerpt, owner)
            VALUES (%(id)s, 1, %(now)s, %(now)s, 'permanent', 404, 'HTTP 404', 'Not Found',
                'seed')
            """,
            {"id": failed, "now": clock()},
        )
        await conn.execute(
            """
            INSERT INTO report_domains (day, policy_domain, state, updated_at)
            VALUES (%(day)s, 'failing.example', 'built', %(now)s)
            """,
            {"day": yesterday, "now": clock()},
        )
    return Seeded(today, yesterday, tokens[Scope.ADMIN], tokens[Scope.READ], pk, failed, failed_rua)
