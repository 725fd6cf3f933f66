"""The one clock: every time the service writes or compares comes from the `Clock` it
was handed (SQL gets it as a parameter), so a test runs a whole day on a fake clock in
milliseconds. Only entry points choose `system_clock`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real time, timezone-aware UTC."""
    return datetime.now(UTC)
