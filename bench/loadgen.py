"""A small HTTP/1.1 keep-alive load generator for loopback benchmarks.

Hand-written on asyncio streams because the benchmark client shares two cores with the
server and PostgreSQL: a general-purpose client (httpx) costs several times more CPU per
request than the server under test, and would measure itself. It sends pre-encoded
requests and reads status line, headers and a Content-Length body; nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Stats:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def encode_post(host: str, port: int, path: str, token: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    sessions: int,
    stats: Stats,
    on_ok: Callable[[int], None],
) -> None:
    started = time.perf_counter()
    writer.write(request)
    status = await _read_response(reader)
    stats.latencies.append(time.perf_counter() - started)
    stats.statuses[status] = stats.statuses.get(status, 0) + 1
    if status == 200:
        stats.ok += 1
        on_ok(sessions)
    else:
        stats.failed += 1


async def run_clients(
    host: str,
    port: int,
    clients: int,
    seconds: float,
    next_request: Callable[[], tuple[bytes, int]],
    stats: Stats,
    on_ok: Callable[[int], None],
) -> None:
    """`clients` connections send back-to-back requests for `seconds`.

    `next_request()` returns the encoded request and the sessions it carries;
    `on_ok(sessions)` is called for each 200, so totals can be checked afterwards.
    """
    deadline = time.monotonic() + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                await _exchange(reader, writer, *next_request(), stats, on_ok)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))


async def send_each(
    host: str,
    port: int,
    clients: int,
    requests: list[tuple[bytes, int]],
    stats: Stats,
    on_ok: Callable[[int], None],
) -> None:
    """Send every request once, over `clients` keep-alive connections, each taking the
    next unsent one (a fixed workload, where `run_clients` runs for a time)."""
    queue = iter(requests)

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request, sessions in queue:
                await _exchange(reader, writer, request, sessions, stats, on_ok)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
