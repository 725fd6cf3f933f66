"""What every CLI command shares: settings that exit with readable lines, the database
URL (a configured server, or the embedded one started and stopped around the command),
opened resources, and the scheduler built on them."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO, TypeVar

import uvicorn

from app.config import Settings, SettingsError, load_settings
from app.delivery.senders import Senders, startup_summary, startup_warnings
from app.logs import setup_logging
from app.resources import Resources, open_resources
from app.scheduler.service import Scheduler, stop_scheduler

log = logging.getLogger(__name__)
T = TypeVar("T")


class Progress:
    """A progress line for long work. On a terminal it is redrawn in place; anywhere else
    (a log file, a pipe, journald) only the final line is written, so logs hold no `\r`.
    As a context manager it ends a drawn line on the way out, so an error that follows
    starts on a line of its own."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._open = False

    def update(self, text: str) -> None:
        if self._tty:
            # \r back to the start, ESC[K clears what a longer line left behind.
            self._stream.write(f"\r\x1b[K{text}")
            self._stream.flush()
            self._open = True

    def done(self, text: str) -> None:
        self._stream.write(("\r\x1b[K" if self._open else "") + text + "\n")
        self._stream.flush()
        self._open = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print("tlsrpt: invalid configuration:", file=sys.stderr)
        for line in exc.lines:
            print(f"  {line}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.log_format.value)
    return settings


@contextmanager
def database_url(settings: Settings, *, migrate: bool = True) -> Iterator[str]:
    """The configured URL, or an embedded server's for the duration of the block.

    The embedded database is migrated on start: a fresh machine needs no extra step.
    """
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    from app.db.embedded import start_embedded
    from app.db.migrate import upgrade

    embedded = start_embedded(settings.data_dir)
    try:
        if migrate:
            upgrade(embedded.url)
        yield embedded.url
    finally:
        embedded.stop()


def run_with_resources(settings: Settings, work: Callable[[Resources], Awaitable[T]]) -> T:
    """Run `work` on this process's resources, on the configured database or an embedded
    one started around it."""

    async def run(url: str) -> T:
        res = await open_resources(settings, url)
        try:
            return await work(res)
        finally:
            await res.close()

    with database_url(settings) as url:
        return asyncio.run(run(url))


class GracefulServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT end `run()` normally instead of re-raising the signal
    after shutdown: the embedded database and other resources then close in order and
    the exit status is 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def announce_configuration(resources: Resources) -> Senders:
    """Open the senders (a configured but unusable DKIM key raises DkimKeyError), say in
    one line what will happen, and plainly what will not be sent."""
    senders = resources.open_senders()
    summary = startup_summary(resources.settings, senders)
    log.info("delivery_configuration", extra={"fields": {"message": summary}})
    for line in startup_warnings(resources.settings, senders):
        log.warning("delivery_limited", extra={"fields": {"message": line}})
    return senders


def scheduler_of(resources: Resources, **options: Any) -> Scheduler:
    """The scheduler on this process's resources (see `announce_configuration`)."""
    return Scheduler(
        resources.pool,
        resources.resolver,
        announce_configuration(resources),
        resources.clock,
        resources.settings,
        **options,
    )


async def start_scheduler(resources: Resources) -> Callable[[], Awaitable[None]]:
    """Run the scheduler in the background; returns the coroutine function that stops it
    (the `tlsrpt serve` lifespan hook)."""
    scheduler = scheduler_of(resources)
    task = asyncio.create_task(scheduler.run(), name="tlsrpt-scheduler")

    async def stop() -> None:
        await stop_scheduler(scheduler, task, resources.settings.scheduler.stop_timeout_seconds)

    return stop


# The cyclic collector's first generation runs after this many new container objects
# (Python's default: 700). A batch of 1,000 results allocates tens of thousands of
# short-lived objects and a received report of 50 policies about 2,000, nearly all freed by
# reference counting; at 700 the collector ran dozens of times a batch and two times a
# report, its older generations walking the whole heap every few: 40-60 % of the CPU of
# parsing a batch. Cycles are still collected, in larger steps.
GC_THRESHOLD = 50_000


async def freeze_heap(resources: Resources) -> None:
    """The last `tlsrpt serve` start hook: once everything is loaded, move what exists
    (modules, the app, its routes and models) out of the cyclic collector's sight.

    A full collection walks every tracked object, and a server's heap after start is
    about 160,000 of them: under bench/inbound.py such collections took a fifth of the
    server's CPU (1.4 s of gen-2 collections for 5,000 reports). Frozen objects are not
    walked; what requests allocate is collected as before, less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, oldest)
