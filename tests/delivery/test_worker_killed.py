"""A `tlsrpt worker` killed with SIGKILL in the middle of sending a report: its lease
expires, another worker process sends the report, and the rua gets it exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from app.config import Settings
from tests.delivery.env import DeliveryEnv, attempt_rows, delivery_states, store_report
from tests.e2e.test_serve_embedded import ROOT
from tests.wait import until, until_awaited

LEASE_SECONDS = 5  # the setting's minimum: the survivor waits this long, on the real clock
RUA = "mailto:tlsrpt@example.com"


def _worker_env(settings: Settings, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env.update(
        {
            "TLSRPT_DATABASE_URL": database_url,
            "TLSRPT_LOG_LEVEL": "WARNING",
            "TLSRPT_REPORT__ORGANIZATION_NAME": "Sender Org",
            "TLSRPT_REPORT__CONTACT_INFO": "tlsrpt@sender.example",
            "TLSRPT_SMTP__HOST": "127.0.0.1",
            "TLSRPT_SMTP__PORT": str(settings.smtp.port),
            "TLSRPT_SMTP__SECURITY": "none",
            "TLSRPT_MAIL__FROM": "reports@sender.example",
            "TLSRPT_DKIM__SELECTOR": "sel",
            "TLSRPT_DKIM__PRIVATE_KEY_FILE": str(settings.dkim.private_key_file),
            "TLSRPT_DELIVERY__LEASE_SECONDS": str(LEASE_SECONDS),
            "TLSRPT_SCHEDULER__POLL_SECONDS": "0.2",
        }
    )
    return env


@asynccontextmanager
async def worker(env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "worker",
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)


async def test_a_worker_killed_mid_delivery_is_taken_over_once(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    await store_report(
        resources,
        # Yesterday on the system clock: within retention (the workers purge older ones).
        day=datetime.now(UTC).date() - timedelta(days=1),
        policy_domain="example.com",
        rua=[RUA],
        next_attempt_at=datetime.now(UTC),  # the workers run on the system clock
    )
    variables = _worker_env(env.settings, env.database_url)
    stuck = asyncio.Event()
    env.smtp.data_hook = stuck  # the relay takes DATA, then never answers
    async with worker(variables) as dying:
        await asyncio.wait_for(env.smtp.data_waiting.wait(), 30)
        dying.send_signal(signal.SIGKILL)  # dies mid-delivery, its lease held
        await dying.wait()
    env.smtp.data_hook = None
    stuck.set()
    assert (await delivery_states(resources))[RUA][0] == "sending"
    assert env.smtp.messages == []

    async def sent() -> bool:
        return (await delivery_states(resources))[RUA][0] == "sent"

    async with worker(variables):
        await until(lambda: env.smtp.messages, "the survivor's mail", every=0.05)
        await until_awaited(sent, "the delivery recorded as sent", every=0.05)
    assert [m.rcpt_tos for m in env.smtp.messages] == [["tlsrpt@example.com"]]
    state, attempts, _ = (await delivery_states(resources))[RUA]
    assert (state, attempts) == ("sent", 2)
    outcomes = [a[1] for a in await attempt_rows(resources, RUA)]
    assert outcomes == ["lease_expired", "sent"]
