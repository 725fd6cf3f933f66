"""Report building: turn a closed UTC day into one RFC 8460 report per policy domain.

`build_day` closes the day through the ingest service, reads the counters of the domains
still open, looks up `_smtp._tls.<domain>` with no transaction open, and stores per
chunk of domains each one's outcome: a report with one delivery per usable rua, or the
reason for none. A temporary DNS failure leaves a domain pending with backoff (up to
`dns_retry_max_hours`, then 'gave_up'); the scheduler runs the day again when the first
is due. Unique keys make a second run a no-op. `purge_expired` is retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from app.backoff import backoff_seconds
from app.clock import Clock
from app.config import ReportSettings, Settings
from app.db.pool import Pool
from app.dns.lookup import (
    LookupOutcome,
    MultipleRecordsError,
    NoRecordError,
    RecordSyntaxError,
    TemporaryDnsError,
    lookup_many,
)
from app.dns.resolver import TxtResolver
from app.ingest import service as ingest
from app.report import store
from app.report.store import DomainState, NewReport
from app.tlsrpt.model import PolicyAggregate
from app.tlsrpt.record import TlsrptRecord
from app.tlsrpt.report import BuiltReport, Reporter, build_report

log = logging.getLogger(__name__)

# Domains looked up and stored per transaction: bounds memory and transaction length.
CHUNK_SIZE = 1000


@dataclass
class BuildSummary:
    """What one `build_day` call did; `already_done` were settled by an earlier run."""

    day: date
    built: int = 0
    no_report: int = 0
    pending: int = 0
    gave_up: int = 0
    already_done: int = 0
    next_retry_at: datetime | None = None


class NoReportError(Exception):
    """Nothing would be sent for this (domain, day); `reason` as in report_domains."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decision:
    """The outcome for one domain: a report (with rua and kinds), or a state and reason."""

    state: str
    reason: str | None = None
    detail: str | None = None
    report: BuiltReport | None = None
    rua: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    retry_in: float | None = None  # seconds until the next lookup, for 'pending'
    # The record's rua this service can not use, (uri, reason): shown, never dropped.
    unusable: tuple[tuple[str, str], ...] = ()


def reporter_of(settings: ReportSettings) -> Reporter:
    return Reporter(settings.organization_name, settings.contact_info)


def decide_before_dns(
    settings: ReportSettings, aggregates: Sequence[PolicyAggregate]
) -> Decision | None:
    """Reasons not to report that need no DNS lookup, or None to go on."""
    # RFC 8460 §3: sessions that delivered a TLS report never cause a report alone.
    if sum(a.trigger_count for a in aggregates) == 0:
        return Decision("no_report", "only_report_delivery_results")
    if not settings.send_success_only_days and not any(a.failure_count for a in aggregates):
        return Decision("no_report", "success_only_day_disabled")
    return None


def decide(
    reporter: Reporter,
    day: date,
    domain: str,
    aggregates: Sequence[PolicyAggregate],
    outcome: TlsrptRecord | Exception,
) -> Decision:
    """The outcome for a domain given its lookup result (temporary errors excluded)."""
    if isinstance(outcome, NoRecordError):
        return Decision("no_report", "no_record")
    if isinstance(outcome, MultipleRecordsError):
        return Decision("no_report", "multiple_records", str(outcome))
    if isinstance(outcome, RecordSyntaxError):
        return Decision("no_report", "syntax_error", str(outcome))
    if not isinstance(outcome, TlsrptRecord):
        raise TypeError(f"unexpected lookup outcome {outcome!r}")
    usable = outcome.usable_rua
    if not usable:
        detail = "; ".join(f"{u.uri}: {u.problem}" for u in outcome.rua)
        return Decision("no_report", "no_usable_rua", detail[:2000])
    report = build_report(reporter, day, domain, aggregates)
    return Decision(
        "built",
        report=report,
        rua=tuple(u.uri for u in usable),
        kinds=tuple(u.kind for u in usable),
        unusable=tuple((u.uri, u.problem) for u in outcome.rua if u.problem is not None),
    )


async def build_day(
    pool: Pool,
    resolver: TxtResolver,
    clock: Clock,
    settings: ReportSettings,
    day: date,
    *,
    spread: Callable[[], float] = lambda: 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """Close `day` and build its reports; safe to run again and from several instances.

    Domains go in chunks: while one chunk is decided and stored, the next chunk's DNS
    lookups already run.
    """
    await ingest.close_day(pool, clock, day)
    async with pool.connection() as conn:
        states = {s.policy_domain: s for s in await store.list_report_domains(conn, day)}
    domains = await ingest.day_domains(pool, day)
    job = _DayBuild(pool, resolver, settings, clock(), day, states, spread)
    todo = job.triage(domains)
    await job.read_counters(todo, everything=len(todo) == len(domains))
    chunks = [todo[i : i + CHUNK_SIZE] for i in range(0, len(todo), CHUNK_SIZE)]
    lookup: asyncio.Task[_LookedUp] | None = None
    try:
        for index, chunk in enumerate(chunks):
            looked_up = await (lookup or job.look_up(chunk))
            lookup = None
            if index + 1 < len(chunks):
                lookup = asyncio.create_task(job.look_up(chunks[index + 1]))
            await job.settle(looked_up)
            if progress is not None:
                progress(min((index + 1) * CHUNK_SIZE, len(todo)), len(todo))
    finally:
        if lookup is not None:
            lookup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lookup
    summary = job.summary
    log.info(
        "report_day_built",
        extra={
            "fields": {
                "day": day.isoformat(),
                "built": summary.built,
                "no_report": summary.no_report,
                "pending": summary.pending,
                "gave_up": summary.gave_up,
                "already_done": summary.already_done,
                "next_retry_at": summary.next_retry_at,
            }
        },
    )
    return summary


@dataclass
class _LookedUp:
    """One chunk after DNS: decisions that needed no lookup, and lookup outcomes."""

    early: dict[str, Decision]
    outcomes: dict[str, LookupOutcome]


@dataclass
class _DayBuild:
    """The state of one `build_day` run."""

    pool: Pool
    resolver: TxtResolver
    settings: ReportSettings
    now: datetime
    day: date
    states: dict[str, DomainState]
    spread: Callable[[], float]
    counters: dict[str, list[PolicyAggregate]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.reporter = reporter_of(self.settings)
        self.summary = BuildSummary(self.day)

    def triage(self, domains: Sequence[str]) -> list[str]:
        """The domains to do now; count the settled ones and those waiting for a retry."""
        todo = []
        for domain in sorted(domains):
            state = self.states.get(domain)
            if state is not None and state.state != "pending":
                self.summary.already_done += 1
            elif state is not None and state.next_attempt_at and state.next_attempt_at > self.now:
                self.summary.pending += 1
                _note_retry(self.summary, state.next_attempt_at)
            else:
                todo.append(domain)
        return todo

    async def read_counters(self, todo: list[str], everything: bool) -> None:
        """The counters of the domains to do, in one query (the whole day when all are)."""
        for aggregate in await ingest.day_aggregates(
            self.pool, self.day, None if everything else todo
        ):
            self.counters[aggregate.policy.policy_domain].append(aggregate)

    async def look_up(self, domains: list[str]) -> _LookedUp:
        early: dict[str, Decision] = {}
        to_look_up = []
        for domain in domains:
            decision = decide_before_dns(self.settings, self.counters[domain])
            if decision is None:
                to_look_up.append(domain)
            else:
                early[domain] = decision
        # No transaction is open while DNS answers.
        return _LookedUp(early, await lookup_many(self.resolver, to_look_up))

    async def settle(self, looked_up: _LookedUp) -> None:
        """Decide each domain of a chunk and store the outcomes in one transaction."""
        decisions = dict(looked_up.early)
        for domain, outcome in looked_up.outcomes.items():
            if isinstance(outcome, TemporaryDnsError):
                decisions[domain] = _retry(
                    self.settings, self.states.get(domain), self.now, outcome
                )
            else:
                decisions[domain] = decide(
                    self.reporter, self.day, domain, self.counters.pop(domain), outcome
                )
        rows: list[DomainState] = []
        reports: list[NewReport] = []
        for domain, d in sorted(decisions.items()):
            rows.append(self._row(domain, d))
            if d.report is not None:
                reports.append(
                    NewReport(
                        report_id=d.report.report_id,
                        policy_domain=domain,
                        report_json=d.report.json,
                        report_gzip=d.report.gzip,
                        filename=d.report.filename,
                        rua=d.rua,
                        kinds=d.kinds,
                        delays=tuple(max(0.0, self.spread()) for _ in d.rua),
                        unusable=d.unusable,
                    )
                )
        async with self.pool.connection() as conn, conn.transaction():
            written = await store.upsert_report_domains(conn, self.day, rows, self.now)
            await store.insert_reports(
                conn, self.day, [r for r in reports if r.policy_domain in written], self.now
            )
        self._count(rows, written)

    def _row(self, domain: str, d: Decision) -> DomainState:
        previous = self.states.get(domain)
        attempts = (previous.attempts if previous else 0) + 1
        first = previous.first_attempt_at if previous and previous.first_attempt_at else self.now
        next_at = None if d.retry_in is None else self.now + timedelta(seconds=d.retry_in)
        return DomainState(
            self.day, domain, d.state, d.reason, d.detail, attempts, first, next_at, self.now
        )

    def _count(self, rows: list[DomainState], written: set[str]) -> None:
        summary = self.summary
        for row in rows:
            if row.policy_domain not in written:
                summary.already_done += 1  # another instance settled it meanwhile
            elif row.state == "built":
                summary.built += 1
            elif row.state == "no_report":
                summary.no_report += 1
            elif row.state == "gave_up":
                summary.gave_up += 1
            else:
                summary.pending += 1
                if row.next_attempt_at is not None:
                    _note_retry(summary, row.next_attempt_at)


def _retry(
    settings: ReportSettings, previous: DomainState | None, now: datetime, error: TemporaryDnsError
) -> Decision:
    """Backoff after a temporary DNS failure: pending with a delay, or given up."""
    attempts = (previous.attempts if previous else 0) + 1
    first = previous.first_attempt_at if previous and previous.first_attempt_at else now
    deadline = first + timedelta(hours=settings.dns_retry_max_hours)
    reason = f"dns_temporary_failure: {error}"[:500]
    if now >= deadline:
        return Decision("gave_up", reason)
    remaining = (deadline - now).total_seconds()
    # One last try at the deadline.
    delay = backoff_seconds(attempts, initial=settings.dns_retry_initial_seconds, cap=remaining)
    return Decision("pending", reason, retry_in=delay)


def _note_retry(summary: BuildSummary, at: datetime) -> None:
    if summary.next_retry_at is None or at < summary.next_retry_at:
        summary.next_retry_at = at


@dataclass(frozen=True)
class PurgeSummary:
    reports: int
    policy_rows: int


async def purge_expired(pool: Pool, clock: Clock, settings: Settings) -> PurgeSummary:
    """Retention: delete reports (and deliveries, outcomes) and counters past their days."""
    cutoff = clock().date() - timedelta(days=settings.retention.reports_days)
    async with pool.connection() as conn, conn.transaction():
        reports = await store.delete_reports_before(conn, cutoff)
    policy_rows = await ingest.purge_expired(pool, clock, settings)
    log.info(
        "retention_purged",
        extra={
            "fields": {
                "reports": reports,
                "policy_rows": policy_rows,
                "reports_before": cutoff.isoformat(),
            }
        },
    )
    return PurgeSummary(reports, policy_rows)
