"""The services called the way the entry points call them, on a test's `Resources`.

Services take what they use (pool, clock, resolver, settings); tests that hold a
`Resources` call them through these one-liners instead of spelling the arguments out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from app.cli.runtime import announce_configuration
from app.ingest import service as ingest
from app.report import service as report
from app.resources import Resources
from app.scheduler.service import Scheduler
from app.tlsrpt.tally import Tally


async def record(res: Resources, tally: Tally, *, batch_id: str | None = None) -> bool:
    """Add a tally through the one ingest path."""
    return await ingest.record_tally(
        res.committer, res.clock, res.settings, tally, batch_id=batch_id
    )


async def close_day(res: Resources, day: date) -> bool:
    return await ingest.close_day(res.pool, res.clock, day)


async def build_day(
    res: Resources, day: date, *, spread: Callable[[], float] = lambda: 0.0, **options: Any
) -> report.BuildSummary:
    return await report.build_day(
        res.pool, res.resolver, res.clock, res.settings.report, day, spread=spread, **options
    )


async def purge_expired(res: Resources) -> report.PurgeSummary:
    return await report.purge_expired(res.pool, res.clock, res.settings)


class SchedulerOn(Scheduler):
    """The scheduler `tlsrpt serve` runs, keeping the resources it was built on for the
    test to look at."""

    def __init__(self, resources: Resources, **options: Any) -> None:
        super().__init__(
            resources.pool,
            resources.resolver,
            announce_configuration(resources),
            resources.clock,
            resources.settings,
            **options,
        )
        self.resources = resources
