"""Two `tlsrpt serve` instances (real processes) on one PostgreSQL, loaded at the same
time: every acknowledged session is counted exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import httpx
import psycopg

from tests.e2e.test_serve_embedded import ROOT, free_port, wait_ready

DOMAINS = [f"d{i}.example" for i in range(30)]


def item(rng: random.Random) -> dict[str, Any]:
    domain = rng.choice(DOMAINS)
    result: dict[str, Any] = {
        "policy": {
            "policy-type": "sts",
            "policy-domain": domain,
            "policy-string": ["version: STSv1", "mode: enforce", f"mx: mx.{domain}"],
            "mx-host": [f"mx.{domain}"],
        },
        "result-type": "success",
        "recipient-domain": domain,
        "count": rng.randrange(1, 4),
    }
    if rng.random() < 0.2:
        result["result-type"] = "certificate-expired"
        result["receiving-mx-hostname"] = f"mx.{domain}"
    return result


def test_two_instances_under_concurrent_ingest_count_exactly(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env.update({"TLSRPT_DATABASE_URL": database_url, "TLSRPT_LOG_LEVEL": "WARNING"})
    created = subprocess.run(
        [sys.executable, "-m", "app", "token", "create", "--scope", "ingest", "--name", "two"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {created.stdout.split()[-1]}"}
    servers = []
    bases = []
    try:
        for _ in range(2):
            port = free_port()
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app", "serve", "--port", str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for server, base in zip(servers, bases, strict=True):
            wait_ready(server, base)

        rng = random.Random(13)
        batches = [[item(rng) for _ in range(40)] for _ in range(160)]
        statuses: Counter[int] = Counter()
        ok: Counter[str] = Counter()
        failed: Counter[str] = Counter()

        async def sender(n: int) -> None:
            async with httpx.AsyncClient(headers=headers, timeout=60) as client:
                for k in range(n, len(batches), 8):
                    base = bases[k % 2]  # each sender alternates between the instances
                    response = await client.post(f"{base}/v1/results", json={"results": batches[k]})
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        for r in batches[k]:
                            domain = r["policy"]["policy-domain"]
                            counter = ok if r["result-type"] == "success" else failed
                            counter[domain] += r["count"]

        async def load() -> None:
            await asyncio.gather(*(sender(n) for n in range(8)))

        asyncio.run(load())
        assert statuses == {200: len(batches)}
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT policy_domain, sum(success_count), sum(failure_count) FROM policy_counts"
                " GROUP BY 1"
            ).fetchall()
            details = conn.execute(
                "SELECT sum(failed_session_count) FROM failure_counts"
            ).fetchone()
            recipients = conn.execute(
                "SELECT sum(success_count), sum(failure_count) FROM recipient_counts"
            ).fetchone()
        assert {d: (s, f) for d, s, f in rows} == {
            d: (ok[d], failed[d]) for d in ok.keys() | failed.keys()
        }
        assert details == (sum(failed.values()),)
        assert recipients == (sum(ok.values()), sum(failed.values()))
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            output, _ = server.communicate(timeout=60)
            assert server.returncode == 0, output
