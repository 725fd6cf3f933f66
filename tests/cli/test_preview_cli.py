"""`tlsrpt preview` as an operator runs it, with DNS from a loopback server."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date
from pathlib import Path

import orjson

from app.resources import Resources
from app.tlsrpt.model import Policy, PolicyType
from app.tlsrpt.tally import Tally
from tests import services
from tests.dns.fake_resolver import FakeResolver
from tests.dns.loopback_server import loopback_dns

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2026, 11, 23)


async def tlsrpt(*args: str, env: dict[str, str]) -> tuple[int, bytes, str]:
    """Run the CLI without blocking the loop (the loopback DNS server answers meanwhile)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    full_env.update(env, TLSRPT_LOG_LEVEL="WARNING")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=ROOT,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out, err.decode()


async def ingest(resources: Resources, domain: str) -> None:
    tally = Tally()
    tally.add_session(DAY, Policy(PolicyType.NO_POLICY_FOUND, domain), None, count=3)
    await services.record(resources, tally)


async def test_preview_over_real_dns_then_stored(database_url: str, resources: Resources) -> None:
    await ingest(resources, "good.example")
    await ingest(resources, "missing.example")
    async with loopback_dns() as (server, port):
        env = {"TLSRPT_DATABASE_URL": database_url, "TLSRPT_DNS__NAMESERVERS": f"127.0.0.1:{port}"}
        code, out, err = await tlsrpt("preview", "good.example", "--day", "2026-11-23", env=env)
        assert code == 0, err
        assert "_smtp._tls.good.example. TXT" in server.queries
        assert "not built yet" in err and "mailto:tlsrpt@good.example" in err
        document = orjson.loads(out)
        assert document["policies"][0]["summary"]["total-successful-session-count"] == 3

        code, _, err = await tlsrpt("preview", "missing.example", "--day", "2026-11-23", env=env)
        assert (code, "no_record" in err) == (1, True)
        code, _, err = await tlsrpt("preview", "none.example", "--day", "2026-11-23", env=env)
        assert (code, "no_results" in err) == (1, True)

    resolver = FakeResolver()
    resolver.publish("good.example", "v=TLSRPTv1; rua=mailto:tlsrpt@good.example")
    resources.resolver = resolver
    await services.build_day(resources, DAY)
    env = {"TLSRPT_DATABASE_URL": database_url, "TLSRPT_DNS__NAMESERVERS": "127.0.0.1:9"}
    code, stored, err = await tlsrpt("preview", "good.example", "--day", "2026-11-23", env=env)
    assert code == 0, err
    assert "(built)" in err
    assert stored == out  # the preview was exactly what got built
    code, pretty, _ = await tlsrpt(
        "preview", "good.example", "--day", "2026-11-23", "--pretty", env=env
    )
    assert orjson.loads(pretty) == document
    assert pretty.count(b"\n") > 5
