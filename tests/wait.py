"""Waiting in tests for something to happen: a condition polled against a deadline.

A fixed sleep is too short on a loaded machine (a flake) and too long everywhere else (a
slow suite). These return as soon as the condition holds, and fail after a generous
deadline naming the condition that never held. `until` is for coroutines (and
`until_awaited` when the condition itself must be awaited); `until_blocking` for plain
tests that wait on a thread or a subprocess. A condition that costs something
(a connection to a starting server) is polled less often: `every`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.005


async def until(
    condition: Callable[[], T | None], what: str | None = None, every: float = POLL_SECONDS
) -> T:
    """The first truthy value of `condition()`, polled while the event loop runs."""

    async def check() -> T | None:
        return condition()

    return await _until(check, condition, what, every)


async def until_awaited(
    condition: Callable[[], Awaitable[T | None]],
    what: str | None = None,
    every: float = POLL_SECONDS,
) -> T:
    """The first truthy value of `await condition()` (a query, a request)."""
    return await _until(condition, condition, what, every)


async def _until(
    check: Callable[[], Awaitable[T | None]],
    condition: Callable[[], object],
    what: str | None,
    every: float,
) -> T:
    deadline = asyncio.timeout(DEADLINE_SECONDS)
    try:
        async with deadline:
            # Polling is the point: these conditions (a thread's counter, a socket
            # file, a row in pg_locks) have no event to wait on.
            while not (value := await check()):  # noqa: ASYNC110
                await asyncio.sleep(every)
    except TimeoutError:
        if not deadline.expired():
            raise  # the condition's own
        raise AssertionError(_not_reached(condition, DEADLINE_SECONDS, what)) from None
    return value


def until_blocking(
    condition: Callable[[], T | None],
    what: str | None = None,
    every: float = POLL_SECONDS,
    timeout: float = DEADLINE_SECONDS,
) -> T:
    """The first truthy value of `condition()`, polled from a plain (non-async) test."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(_not_reached(condition, timeout, what))
        time.sleep(every)
    return value


def _not_reached(condition: Callable[[], object], seconds: float, what: str | None) -> str:
    if what is None:
        try:
            what = inspect.getsource(condition).strip()
        except (OSError, TypeError):
            what = repr(condition)
    return f"not reached within {seconds:g} s: {what}"
