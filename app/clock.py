"""The one clock of the service: a callable returning the current UTC time.

Every timestamp the service writes or compares comes from the `Clock` it was handed
(SQL receives it as a parameter), so a test that injects a fake clock runs day close,
report building, delivery, retries and lease expiry in milliseconds. Only entry points
choose `system_clock`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real time, timezone-aware UTC."""
    return datetime.now(UTC)
