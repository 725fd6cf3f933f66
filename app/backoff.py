"""The one backoff rule, for delivery (RFC 8460 §5.5), DNS retries of report building
and the collector's sink, each with its own settings. Pure: jitter is the caller's."""

from __future__ import annotations

# Largest extra share of a delay added by jitter.
JITTER_SHARE = 0.25


def backoff_seconds(
    failures: int, *, initial: float, cap: float, factor: float = 2.0, jitter: float = 0.0
) -> float:
    """`initial * factor**(failures-1)` seconds, at most `cap`, stretched by up to
    JITTER_SHARE by `jitter` in [0, 1) so work failing together does not retry in step."""
    delay = initial
    for _ in range(max(failures - 1, 0)):
        delay *= factor
        if delay >= cap:  # also keeps large exponents from overflowing floats
            break
    return min(delay, cap) * (1.0 + JITTER_SHARE * jitter)
