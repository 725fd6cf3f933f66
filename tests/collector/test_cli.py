"""`tlsrpt collect` as a process (SIGTERM mid-stream), and `tlsrpt serve --libtlsrpt-socket`."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import generate_latest

from app.cli import build_parser
from app.cli.collect import serve_hooks
from app.ingest.service import day_aggregates
from app.main import create_app
from app.resources import Resources
from tests.clock import FakeClock
from tests.collector.datagrams import Expected, encode, random_datagram
from tests.collector.live import LiveServer, free_port
from tests.collector.memory import clean, send_all
from tests.collector.test_collector import generated
from tests.collector.test_database_sink import from_aggregates
from tests.wait import until, until_awaited

ROOT = Path(__file__).resolve().parents[2]


class StreamSender(threading.Thread):
    """Sends distinct datagrams round-robin until the receiver goes away."""

    def __init__(self, path: Path, datagrams: list[bytes], limit: int) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.datagrams = datagrams
        self.limit = limit
        self.sent = 0
        self.error: OSError | None = None

    def run(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            n = len(self.datagrams)
            while self.sent < self.limit:
                try:
                    sender.sendto(self.datagrams[self.sent % n], str(self.path))
                except OSError as exc:
                    self.error = exc
                    return
                self.sent += 1


async def test_sigterm_mid_stream_loses_nothing_that_reached_the_socket(
    tmp_path: Path, database_url: str, resources: Resources
) -> None:
    rng = random.Random(70)
    specs = [random_datagram(rng) for _ in range(300)]
    datagrams = [encode(s) for s in specs]
    path = tmp_path / "tlsrpt.sock"
    metrics_port = free_port()
    env = dict(
        os.environ,
        TLSRPT_DATABASE_URL=database_url,
        TLSRPT_DATA_DIR=str(tmp_path / "data"),
        TLSRPT_LOG_FORMAT="text",
    )
    first_day = datetime.now(UTC).date()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app",
        "collect",
        "--socket",
        str(path),
        "--database",
        "--mode",
        "0620",
        "--metrics",
        f"127.0.0.1:{metrics_port}",
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        async with httpx.AsyncClient() as client:

            async def started() -> bool:
                assert process.returncode is None, "the collector exited"
                try:
                    return (await client.get(metrics_url)).status_code == 200
                except httpx.TransportError:
                    return False

            # Metrics are served once the socket is bound and its mode set (the socket
            # file itself appears a moment before its mode).
            await until_awaited(started, every=0.05)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o620

            sender = StreamSender(path, datagrams, limit=2_000_000)
            sender.start()
            await until(lambda: sender.sent >= 30_000 or not sender.is_alive())
            scrape = await client.get(metrics_url)
        assert "tlsrpt_collector_datagrams_received_total" in scrape.text

        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(sender.join, 30)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    assert sender.error is not None, "the sender never noticed the collector stopping"
    assert sender.sent > 30_000

    # Everything the socket accepted (a prefix of the stream) is in the database.
    expected = Expected()
    n = len(specs)
    for i, spec in enumerate(specs):
        times = sender.sent // n + (1 if i < sender.sent % n else 0)
        if times:
            expected.add(spec, times)
    seen = Expected()
    day = first_day
    while day <= datetime.now(UTC).date():
        part = from_aggregates(await day_aggregates(resources.pool, day))
        seen.sessions.update(part.sessions)
        seen.failures.update(part.failures)
        seen.details.update(part.details)
        day += timedelta(days=1)
    assert seen == clean(expected)
    assert b"collector_stopped" in output


async def test_serve_runs_the_collector_in_the_service(
    tmp_path: Path, resources: Resources, clock: FakeClock
) -> None:
    # The production reader (a child process) stamps datagrams with the system clock;
    # ingest checks their day against the service's clock.
    clock.set(datetime.now(UTC))
    path = tmp_path / "serve.sock"
    args = build_parser().parse_args(
        ["serve", "--libtlsrpt-socket", str(path), "--libtlsrpt-socket-mode", "0600"]
    )
    app = create_app(resources.settings, resources, on_start=serve_hooks(args, resources.settings))
    server = LiveServer(app, free_port(), lifespan="on")
    await server.start()
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        datagrams, expected = generated(1000, seed=71)
        await asyncio.to_thread(send_all, path, [*datagrams, b"junk"])
        # The collector counts into this process's registry, which /metrics serves.
        await until(
            lambda: (
                b'tlsrpt_collector_invalid_datagrams_total{kind="bad_json"} 1.0'
                in generate_latest()
            )
        )
        async with httpx.AsyncClient() as client:
            text = (await client.get(server.url + "/metrics")).text
        assert "tlsrpt_collector_datagrams_received_total 1001.0" in text
    finally:
        await server.stop()
    assert not path.exists()
    today = datetime.now(UTC).date()
    seen = Expected()
    for day in (today - timedelta(days=1), today):
        part = from_aggregates(await day_aggregates(resources.pool, day))
        seen.sessions.update(part.sessions)
        seen.failures.update(part.failures)
        seen.details.update(part.details)
    assert seen == expected
    # The collector's metrics left with it.
    assert b"tlsrpt_collector_datagrams_received_total" not in generate_latest()
