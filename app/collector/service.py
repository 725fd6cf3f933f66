"""The collector: socket to sink without loss.

A reader (a child process; or a thread stamping datagrams with the injected clock)
empties the socket. Every `poll_seconds` the loop counts identical datagrams (libtlsrpt
repeats the same bytes), so memory holds distinct datagrams, not volume. Every
`flush_seconds` (or at `flush_datagrams`) each distinct datagram is parsed once, counted
into its day's tally, and sealed into one batch per UTC day for the sink; while the sink
is unreachable batches go to the on-disk spool, and new ones queue behind it, so they
arrive in order. `stop` (SIGTERM) reads what is still queued, then delivers or spools
everything.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from app.backoff import backoff_seconds
from app.clock import Clock
from app.collector.batch import Batch, DayTallies, format_batch, parse_batch
from app.collector.listener import (
    DEFAULT_RECEIVE_BUFFER,
    QUEUE_LENGTH_PATH,
    DatagramReader,
    bind_socket,
    check_queue_length,
)
from app.collector.metrics import CollectorStats
from app.collector.reader_process import ProcessReader
from app.collector.sinks import BatchRefusedError, Sink, SinkUnavailableError
from app.collector.spool import Spool, SpoolFullError
from app.tlsrpt.libtlsrpt import Datagram, DatagramError, parse_datagram

log = logging.getLogger(__name__)

# Distinct datagrams remembered with their parse result; real traffic repeats a few
# thousand shapes, so this is a hit for nearly every datagram.
PARSE_CACHE_SIZE = 50_000
SWITCH_INTERVAL_SECONDS = 0.0005


@dataclass(frozen=True)
class CollectorOptions:
    socket_path: Path
    spool_dir: Path
    owner: str | None = None
    group: str | None = None
    mode: int = 0o660
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    spool_max_bytes: int = 1024 * 1024 * 1024
    flush_seconds: float = 1.0
    flush_datagrams: int = 100_000
    poll_seconds: float = 0.05
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # A delivery taking longer counts as failed; with batch ids a late commit is harmless.
    delivery_timeout_seconds: float = 60.0
    # On stop, spooled batches are still sent for this long when the sink is up.
    stop_drain_seconds: float = 5.0
    # Read the socket in a child process, which stamps datagrams with the system clock
    # (production). False reads it in a thread that stamps them with the injected clock.
    reader_process: bool = True
    # Where the kernel's datagram queue length is read at start-up (tests point elsewhere).
    queue_length_path: Path = QUEUE_LENGTH_PATH


class Collector:
    """Runs the pipeline; `start` binds and starts it, `stop` flushes and closes."""

    def __init__(
        self,
        options: CollectorOptions,
        sink: Sink,
        clock: Clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self._sink = sink
        self._clock = clock
        self._monotonic = monotonic
        self._tally = DayTallies()
        # Raw datagrams read but not yet counted, by UTC day of receipt.
        self._pending: dict[date, Counter[bytes]] = {}
        self._pending_datagrams = 0
        self._cache: dict[bytes, Datagram | DatagramError] = {}
        self._stats = CollectorStats()
        self._logged_kinds: set[str] = set()
        self._reader: DatagramReader | ProcessReader | None = None
        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._absorber: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._retry_at = 0.0
        self._failures = 0
        self._unavailable = False

    def stats(self) -> CollectorStats:
        if self._reader is not None:
            self._stats.datagrams_received = self._reader.received
        if self._spool is not None:
            self._stats.spool_bytes = self._spool.size_bytes
            self._stats.spool_batches = self._spool.pending
        return self._stats

    async def start(self) -> None:
        o = self.options
        queue_length = check_queue_length(o.queue_length_path)
        self._spool = Spool(o.spool_dir, o.spool_max_bytes)
        sock = bind_socket(
            o.socket_path,
            owner=o.owner,
            group=o.group,
            mode=o.mode,
            receive_buffer=o.receive_buffer,
        )
        if o.reader_process:
            self._reader = ProcessReader(sock, o.socket_path)
        else:
            clock = self._clock
            self._reader = DatagramReader(sock, o.socket_path, lambda: clock().timestamp())
            # A reader thread must get the GIL back within a fraction of the socket
            # queue's slack (10 datagrams are 2 ms at 5,000/s); Python's default hands it
            # over every 5 ms. Process-wide; the child-process reader needs none of this.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_SECONDS))
        self._reader.start()
        self._task = asyncio.create_task(self._run(), name="libtlsrpt-collector")
        self._absorber = asyncio.create_task(self._absorb_loop(), name="libtlsrpt-absorb")
        log.info(
            "collector_started",
            extra={
                "fields": {
                    "socket": str(o.socket_path),
                    "spool_dir": str(o.spool_dir),
                    "spooled_batches": self._spool.pending,
                    "max_dgram_qlen": queue_length,
                }
            },
        )

    async def stop(self) -> None:
        """Stop reading, then deliver or spool everything read (SIGTERM)."""
        if self._reader is not None:
            await asyncio.to_thread(self._reader.stop)
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._absorber is not None:
            await self._absorber
        if self._spool is not None:
            self._spool.close()
        s = self.stats()
        log.info(
            "collector_stopped",
            extra={
                "fields": {
                    "datagrams_received": s.datagrams_received,
                    "results_forwarded": s.results_forwarded,
                    "spooled_batches": s.spool_batches,
                }
            },
        )

    async def _absorb_loop(self) -> None:
        # Also while a slow delivery holds `_run`: memory then grows by distinct
        # datagrams, not by volume.
        while not self._stop.is_set():
            self._absorb()
            try:
                await asyncio.wait_for(self._stop.wait(), self.options.poll_seconds)
            except TimeoutError:
                pass

    async def _run(self) -> None:
        o = self.options
        next_flush = self._monotonic() + o.flush_seconds
        while True:
            stopping = self._stop.is_set()
            self._absorb()
            now = self._monotonic()
            if stopping or now >= next_flush or self._pending_datagrams >= o.flush_datagrams:
                await self._flush(final=stopping)
                next_flush = self._monotonic() + o.flush_seconds
            if stopping:
                return
            try:
                await asyncio.wait_for(self._stop.wait(), o.poll_seconds)
            except TimeoutError:
                pass

    def _absorb(self) -> None:
        """Take what the reader has read; count identical datagrams (in C: Counter)."""
        assert self._reader is not None
        for day, chunk in self._reader.take():
            pending = self._pending.get(day)
            if pending is None:
                pending = self._pending[day] = Counter()
            pending.update(chunk)
            self._pending_datagrams += len(chunk)

    def _count_pending(self) -> None:
        """Parse each distinct pending datagram (cached) and add it to the tallies."""
        cache = self._cache
        pending, self._pending, self._pending_datagrams = self._pending, {}, 0
        for day, counter in pending.items():
            for data, times in counter.items():
                parsed = cache.get(data)
                if parsed is None:
                    try:
                        parsed = parse_datagram(data)
                    except DatagramError as exc:
                        parsed = exc
                    if len(cache) >= PARSE_CACHE_SIZE:
                        cache.clear()
                    cache[data] = parsed
                if isinstance(parsed, DatagramError):
                    self._count_invalid(parsed, data, times)
                else:
                    self._tally.add(day, parsed, times)

    def _count_invalid(self, error: DatagramError, data: bytes, times: int) -> None:
        self._stats.invalid[error.kind] += times
        if error.kind not in self._logged_kinds:
            # Once per kind, with a sample; the counter tells how many followed.
            self._logged_kinds.add(error.kind)
            log.warning(
                "collector_invalid_datagram",
                extra={
                    "fields": {
                        "kind": error.kind,
                        "reason": str(error),
                        "sample": data[:300].decode("utf-8", "replace"),
                    }
                },
            )

    async def _flush(self, final: bool = False) -> None:
        assert self._spool is not None
        self._count_pending()
        batches = self._tally.seal()
        if self._spool.pending or self._monotonic() < self._retry_at:
            for batch in batches:
                self._spool_batch(batch)
            if self._monotonic() >= self._retry_at:
                limit = self.options.stop_drain_seconds if final else None
                await self._drain(None if limit is None else self._monotonic() + limit)
            return
        for i, batch in enumerate(batches):
            if not await self._deliver(batch):
                for rest in batches[i:]:
                    self._spool_batch(rest)
                return

    async def _drain(self, deadline: float | None = None) -> None:
        """Deliver spooled batches oldest first until empty, a failure, or `deadline`."""
        assert self._spool is not None
        while (record := self._spool.peek()) is not None:
            if deadline is not None and self._monotonic() >= deadline:
                return
            if not await self._deliver(parse_batch(orjson.loads(record))):
                return
            self._spool.ack()
            # Keep reading the socket's output while a long backlog drains.
            self._absorb()
        if not self._unavailable:
            log.info("collector_spool_drained")

    async def _deliver(self, batch: Batch) -> bool:
        """True when the batch is done with (recorded, or refused for good)."""
        results = batch.tally.sessions
        try:
            async with asyncio.timeout(self.options.delivery_timeout_seconds):
                await self._sink.deliver(batch)
        except BatchRefusedError as exc:
            self._stats.batches_refused += 1
            self._stats.results_refused += results
            log.error(
                "collector_batch_refused",
                extra={
                    "fields": {
                        "batch_id": batch.batch_id,
                        "day": batch.day.isoformat(),
                        "results": results,
                        "reason": str(exc),
                    }
                },
            )
            return True
        except Exception as exc:
            # SinkUnavailableError, a timeout, or a failure nobody foresaw: the batch is
            # kept (spooled) and tried again; losing it would be worse than retrying.
            if not isinstance(exc, SinkUnavailableError | TimeoutError):
                log.exception("collector_delivery_error")
            self._stats.batches_failed += 1
            self._failures += 1
            self._retry_at = self._monotonic() + backoff_seconds(
                self._failures,
                initial=self.options.retry_initial_seconds,
                cap=self.options.retry_max_seconds,
            )
            if not self._unavailable:
                log.warning(
                    "collector_sink_unavailable",
                    extra={"fields": {"reason": str(exc) or "timeout"}},
                )
            self._unavailable = True
            return False
        self._stats.batches_forwarded += 1
        self._stats.results_forwarded += results
        if self._unavailable:
            log.info("collector_sink_recovered")
        self._unavailable = False
        self._failures = 0
        return True

    def _spool_batch(self, batch: Batch) -> None:
        assert self._spool is not None
        try:
            self._spool.append(orjson.dumps(format_batch(batch)))
        except (SpoolFullError, OSError) as exc:
            # Logged loudly and counted: these results are lost.
            self._stats.results_dropped_spool_full += batch.tally.sessions
            log.error(
                "collector_spool_full",
                extra={
                    "fields": {
                        "day": batch.day.isoformat(),
                        "results_lost": batch.tally.sessions,
                        "reason": str(exc),
                    }
                },
            )
            return
        self._stats.batches_spooled += 1
        self._stats.results_spooled += batch.tally.sessions
