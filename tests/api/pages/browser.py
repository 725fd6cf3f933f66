"""Headless Chromium (Debian's `chromium`) driven by Playwright, and the service on a
loopback port for it to load.

One browser per test session (per xdist worker); each test gets a fresh context that
records console errors and every request outside the service's origin, so a test can
assert the page logged no error and fetched nothing from elsewhere.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import uvicorn
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Route

from app.main import create_app
from app.resources import Resources
from tests.wait import until

CHROMIUM = "/usr/bin/chromium"


@asynccontextmanager
async def serve(resources: Resources) -> AsyncIterator[str]:
    """The app on a free loopback port; yields its origin."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(resources.settings, resources), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started, "uvicorn started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Watched:
    """A browser context and what its pages did wrong."""

    context: BrowserContext
    origin: str
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    # Substrings of console errors a test expects (logged at any time, even after the
    # test's last step): those errors are not counted.
    tolerated: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        errors = [e for e in self.console_errors if not any(t in e for t in self.tolerated)]
        assert errors == [], errors
        assert self.foreign_requests == [], self.foreign_requests


@asynccontextmanager
async def watched_context(
    browser: Browser, origin: str, **options: object
) -> AsyncIterator[Watched]:
    context = await browser.new_context(base_url=origin, **options)  # type: ignore[arg-type]
    watched = Watched(context, origin)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.console_errors.append(message.text)

    async def on_foreign(route: Route) -> None:
        # Reaches the network stack: recorded, and never sent (tests touch no internet).
        watched.foreign_requests.append(route.request.url)
        await route.abort()

    context.on("console", on_console)
    await context.route(lambda url: not url.startswith(origin + "/"), on_foreign)
    context.on("weberror", lambda error: watched.console_errors.append(str(error.error)))
    try:
        yield watched
    finally:
        await context.close()
