"""The one backoff rule: how long to wait before trying again after failures. Pure.

The n-th consecutive failure waits `initial * factor**(n-1)` seconds, at most `cap`,
stretched by up to `JITTER_SHARE` of itself by the caller's jitter (a value in [0, 1)
from an injected source), so that work failing together does not retry in lockstep.
Delivery retries (RFC 8460 §5.5), DNS retries of report building and the collector's
sink retries all use it, each with its own settings.
"""

from __future__ import annotations

# Largest extra share of a delay added by jitter.
JITTER_SHARE = 0.25


def backoff_seconds(
    failures: int, *, initial: float, cap: float, factor: float = 2.0, jitter: float = 0.0
) -> float:
    """The wait after the `failures`-th consecutive failure (1 for the first)."""
    delay = initial
    for _ in range(max(failures - 1, 0)):
        delay *= factor
        if delay >= cap:  # also keeps large exponents from overflowing floats
            break
    return min(delay, cap) * (1.0 + JITTER_SHARE * jitter)
