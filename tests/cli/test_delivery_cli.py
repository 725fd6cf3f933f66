"""`tlsrpt send`, `tlsrpt suppress` and `tlsrpt worker` as real processes against the test
database, a loopback DNS server and loopback SMTP/HTTPS sinks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.tlsrpt.model import Policy, PolicyType
from app.tlsrpt.tally import Tally
from tests import services
from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa
from tests.delivery.conftest import dkim_pair, test_ca  # noqa: F401  (fixtures)
from tests.delivery.env import DeliveryEnv, delivery_env, delivery_states, store_report
from tests.dns.loopback_server import loopback_dns
from tests.wait import until

ROOT = Path(__file__).resolve().parents[2]
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)


@pytest.fixture
async def env(
    database_url: str,
    tmp_path: Path,
    test_ca: LoopbackCa,  # noqa: F811
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> AsyncIterator[DeliveryEnv]:
    clock = FakeClock(datetime.now(UTC))
    async with delivery_env(database_url, tmp_path, test_ca, dkim_pair[0], clock) as e:
        yield e


def cli_env(env: DeliveryEnv, dns_port: int) -> dict[str, str]:
    s = env.settings
    values = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    values.update(
        {
            "TLSRPT_DATABASE_URL": env.database_url,
            "TLSRPT_LOG_FORMAT": "text",
            "TLSRPT_REPORT__CONTACT_INFO": s.report.contact_info,
            "TLSRPT_SMTP__HOST": "127.0.0.1",
            "TLSRPT_SMTP__PORT": str(s.smtp.port),
            "TLSRPT_SMTP__SECURITY": "none",
            "TLSRPT_MAIL__FROM": "reports@sender.example",
            "TLSRPT_DKIM__SELECTOR": "sel",
            "TLSRPT_DKIM__PRIVATE_KEY_FILE": str(s.dkim.private_key_file),
            "TLSRPT_HTTPS__ALLOWED_NETWORKS": "127.0.0.0/8",
            "TLSRPT_HTTPS__CA_FILE": str(s.https.ca_file),
            "TLSRPT_DNS__NAMESERVERS": f"127.0.0.1:{dns_port}",
            "TLSRPT_SCHEDULER__POLL_SECONDS": "0.2",
        }
    )
    return values


async def tlsrpt(environ: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        *args,
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_delivers_a_day_once_and_dry_run_changes_nothing(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    # Built earlier, due only later in the send window: `send` sends it now.
    await store_report(
        resources,
        day=YESTERDAY,
        policy_domain="example.com",
        # The process resolves names with the loopback DNS server: an address literal here.
        rua=["mailto:r@example.com", f"https://127.0.0.1:{env.https_port}/tlsrpt"],
        next_attempt_at=datetime.now(UTC) + timedelta(hours=3),
    )
    async with loopback_dns() as (_, dns_port):
        environ = cli_env(env, dns_port)
        status, _, err = await tlsrpt(environ, "send", "--day", YESTERDAY.isoformat())
        assert status == 0, err
        assert f"delivered {YESTERDAY}: 2 sent" in err
        # stderr is a pipe here, not a terminal: no progress redrawn with "\r".
        assert "\r" not in err and err.endswith("\n")
        status, _, err = await tlsrpt(environ, "send", "--day", YESTERDAY.isoformat())
        assert status == 0, err
        assert len(env.smtp.messages) == 1 and len(env.https.posts) == 1

        # Dry run of an open day: what would go where, and nothing changes.
        day = YESTERDAY - timedelta(days=1)
        tally = Tally()
        tally.add_session(day, Policy(PolicyType.NO_POLICY_FOUND, "good.example"), None)
        await services.record(resources, tally)
        status, out, err = await tlsrpt(environ, "send", "--day", day.isoformat(), "--dry-run")
        assert status == 0, err
        assert "good.example (not built yet" in out
        assert "mailto:tlsrpt@good.example -> mail to tlsrpt@good.example via 127.0.0.1:" in out
        assert "https://r.good.example/x -> not sent: r.good.example has no address" in out
    assert len(await delivery_states(resources)) == 2  # nothing built for the dry-run day
    await services.record(resources, tally)  # the day is still open

    status, _, err = await tlsrpt(environ, "send", "--day", datetime.now(UTC).date().isoformat())
    assert status == 2 and "not over yet" in err


async def test_suppress_add_list_remove(env: DeliveryEnv) -> None:
    environ = cli_env(env, 53)
    status, out, err = await tlsrpt(
        environ, "suppress", "add", "Ops@Example.com", "--comment", "bounces", "--expires", "30d"
    )
    assert status == 0, err
    assert "suppressed mailto:Ops@example.com" in out
    status, out, _ = await tlsrpt(environ, "suppress", "list")
    assert "mailto:Ops@example.com" in out and "bounces" in out
    status, _, err = await tlsrpt(environ, "suppress", "add", "gopher://x.example/")
    assert status == 2 and "can not suppress" in err
    status, out, _ = await tlsrpt(environ, "suppress", "remove", "mailto:ops@EXAMPLE.com")
    assert status == 1  # the local part is kept as written: a different address
    status, out, _ = await tlsrpt(environ, "suppress", "remove", "Ops@example.com")
    assert status == 0 and "removed" in out


async def test_worker_delivers_and_stops_on_sigterm(env: DeliveryEnv) -> None:
    resources = await env.open_resources()
    await store_report(
        resources,
        day=YESTERDAY,
        policy_domain="example.com",
        rua=["mailto:r@example.com"],
        next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    environ = cli_env(env, 53)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "worker",
        cwd=ROOT,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(lambda: env.smtp.messages or process.returncode is not None)
        assert len(env.smtp.messages) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    assert "scheduler_stopped" in err.decode()
