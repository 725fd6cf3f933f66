"""The scheduler loop shared by `tlsrpt serve` and `tlsrpt worker`.

Each round: every UTC day that is over (plus grace), open and within retention is built
(`build_day`), its deliveries spread over the send window (RFC 8460 §4.1); days with
domains waiting for a DNS retry are built again when due; once a day, retention runs;
then due deliveries are sent; then an alert round runs (`app.alerts`) and the database
figures of `/metrics` are read again. Each (job, day) has one `scheduler_jobs` row under a
lease, so exactly one instance runs it and a dead instance's job is taken over: any
number of instances run the same loop, with no leader. Clock, randomness and sleep are
injected; `app.cli.runtime` builds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.alerts import gauges
from app.alerts import service as alerts
from app.backoff import backoff_seconds
from app.clock import Clock
from app.config import Settings
from app.db.outage import UNAVAILABLE
from app.db.pool import Pool
from app.delivery.senders import Senders
from app.delivery.service import deliver_due
from app.dns.resolver import TxtResolver
from app.inbound import service as inbound
from app.ingest import hours
from app.ingest import service as ingest
from app.report.service import build_day, purge_expired
from app.scheduler import store

log = logging.getLogger(__name__)

BUILD_JOB = "build_day"
PURGE_JOB = "purge"
# A failed build (database trouble, a bug) is tried again after this long.
BUILD_ERROR_RETRY = timedelta(minutes=5)
# Longest pause between rounds while the database is away (seconds).
OUTAGE_RETRY_CAP = 60.0


def instance_name() -> str:
    """A name for this instance's leases: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def days_to_build(
    now: datetime, open_days: list[date], *, grace: timedelta, oldest: date
) -> list[date]:
    """Open days that are over (their end plus grace has passed) and not past retention."""
    cutoff = (now - grace).date()  # a day is over once the next one has begun, plus grace
    return [d for d in open_days if oldest <= d < cutoff]


@dataclass
class Round:
    """What one scheduler round did."""

    built_days: list[date]
    delivered: int
    alerts: alerts.Round | None = None


class Scheduler:
    def __init__(
        self,
        pool: Pool,
        resolver: TxtResolver,
        senders: Senders,
        clock: Clock,
        settings: Settings,
        *,
        owner: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.pool = pool
        self.resolver = resolver
        self.senders = senders
        self.clock = clock
        self.settings = settings
        self.owner = owner or instance_name()
        self._sleep = sleep
        self._rand = rand
        self._stop = asyncio.Event()
        # dkim_mismatch: the key mail is signed with, against DNS, hourly.
        self.dkim_watch = alerts.DkimWatch(senders.dkim_key, resolver)

    def stop(self) -> None:
        """Finish the sends in flight, claim nothing new, and leave `run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def stop_requested(self) -> None:
        """Return once `stop()` has been called."""
        await self._stop.wait()

    async def run(self) -> None:
        """Rounds every `poll_seconds` until `stop()`; a failed round is logged, not fatal.
        While the database is away the rounds back off (`app/backoff.py`, up to
        OUTAGE_RETRY_CAP), and the outage is logged once, not per round."""
        poll = self.settings.scheduler.poll_seconds
        log.info("scheduler_started", extra={"fields": {"owner": self.owner}})
        failures = 0
        while not self.stopping:
            pause = poll
            try:
                await self.run_once()
                failures = 0
            except UNAVAILABLE as exc:
                failures += 1
                self.pool.outage.failed("scheduler", exc)
                pause = backoff_seconds(
                    failures, initial=poll, cap=max(poll, OUTAGE_RETRY_CAP), jitter=self._rand()
                )
            except Exception:
                log.exception("scheduler_round_failed", extra={"fields": {"owner": self.owner}})
            await self._pause(pause)
        log.info("scheduler_stopped", extra={"fields": {"owner": self.owner}})

    async def _pause(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()

    async def run_once(self) -> Round:
        settings = self.settings
        now = self.clock()
        oldest = ingest.oldest_accepted_day(now, settings)
        open_days = await ingest.open_days_before(self.pool, now.date())
        async with self.pool.connection() as conn:
            retry_days = await store.list_due_job_days(conn, job=BUILD_JOB, now=now)
        grace = timedelta(seconds=settings.scheduler.grace_seconds)
        days = sorted(
            set(days_to_build(now, open_days, grace=grace, oldest=oldest)) | set(retry_days)
        )
        built = []
        for day in days:
            if self.stopping:
                break
            if await self._build(day):
                built.append(day)
        if not self.stopping:
            await self._purge(now.date())
        delivered = 0
        if not self.stopping:
            delivered = await deliver_due(
                self.pool,
                self.senders,
                self.clock,
                settings.delivery,
                sending=settings.send_reports,
                owner=self.owner,
                limit=2**31 - 1,
                jitter=self._rand,
                should_stop=lambda: self.stopping,
            )
        alerted = None
        if not self.stopping:
            alerted = await self._alerts()
        return Round(built_days=built, delivered=delivered, alerts=alerted)

    async def _alerts(self) -> alerts.Round | None:
        """An alert round and the database figures of /metrics; trouble here is logged
        and never stops the reports."""
        result = None
        try:
            result = await alerts.run_round(
                self.pool,
                self.senders,
                self.clock,
                self.settings,
                owner=self.owner,
                jitter=self._rand,
                dkim=self.dkim_watch,
            )
        except Exception:
            log.exception("alert_round_failed", extra={"fields": {"owner": self.owner}})
        try:
            await gauges.refresh(self.pool, self.clock, self.settings)
        except Exception:
            log.exception("metrics_refresh_failed", extra={"fields": {"owner": self.owner}})
        return result

    async def _claim(self, job: str, day: date) -> bool:
        async with self.pool.connection() as conn:
            run = await store.claim_job(
                conn,
                job=job,
                day=day,
                owner=self.owner,
                now=self.clock(),
                lease_seconds=self.settings.scheduler.job_lease_seconds,
            )
        return run is not None

    async def _finish(
        self, job: str, day: date, retry_at: datetime | None, error: str | None = None
    ) -> None:
        async with self.pool.connection() as conn:
            await store.mark_job_finished(
                conn,
                job=job,
                day=day,
                owner=self.owner,
                now=self.clock(),
                retry_at=retry_at,
                error=error,
            )

    async def _build(self, day: date) -> bool:
        if not await self._claim(BUILD_JOB, day):
            return False  # another instance has it, or it is done
        window = self.settings.scheduler.send_window_seconds
        try:
            summary = await build_day(
                self.pool,
                self.resolver,
                self.clock,
                self.settings.report,
                day,
                spread=lambda: self._rand() * window,
            )
        except UNAVAILABLE:
            raise  # the round backs off; the lease lets the job be taken again after
        except Exception as exc:
            log.exception("day_build_failed", extra={"fields": {"day": day.isoformat()}})
            error_at = self.clock() + BUILD_ERROR_RETRY
            await self._finish(BUILD_JOB, day, error_at, f"{type(exc).__name__}: {exc}"[:500])
            return False
        # Domains waiting for a DNS retry: run the day again when the first is due.
        retry_at: datetime | None = None
        if summary.pending:
            retry_at = summary.next_retry_at or self.clock() + BUILD_ERROR_RETRY
        # build_day logged what it did (`report_day_built`, with the retry time).
        await self._finish(BUILD_JOB, day, retry_at)
        return True

    async def _purge(self, today: date) -> None:
        if not await self._claim(PURGE_JOB, today):
            return
        retention = self.settings.retention
        try:
            await purge_expired(self.pool, self.clock, self.settings)
            await inbound.purge_expired(self.pool, self.clock, retention)
            await hours.purge_hours(self.pool, self.clock())
            await alerts.purge_expired(self.pool, self.clock)
            oldest = today - timedelta(days=max(retention.results_days, retention.reports_days))
            async with self.pool.connection() as conn:
                await store.delete_jobs_before(conn, oldest)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            log.exception("purge_failed")
            retry_at = self.clock() + BUILD_ERROR_RETRY
            await self._finish(PURGE_JOB, today, retry_at, f"{type(exc).__name__}: {exc}"[:500])
            return
        await self._finish(PURGE_JOB, today, None)


async def stop_scheduler(scheduler: Scheduler, task: asyncio.Task[None], grace: float) -> None:
    """Ask the scheduler to stop; sends in flight get `grace` seconds, then are cut off
    (their leases expire and another instance, or the next start, takes them over)."""
    scheduler.stop()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        log.warning("scheduler_stop_timeout", extra={"fields": {"grace_seconds": grace}})
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
