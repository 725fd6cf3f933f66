"""Report building: turn a closed UTC day into one RFC 8460 report per policy domain.

`build_day` closes the day (ingest then refuses it), reads all its counters at once,
looks up `_smtp._tls.<domain>` for every domain still open (concurrently, bounded by the
resolver, with no transaction open), then stores in one transaction per chunk each
domain's outcome: a report with one delivery per usable rua, or the reason for none. A
temporary DNS failure leaves the domain pending, retried with doubling delays for up to
`dns_retry_max_hours`, then 'gave_up'. Unique keys make a second run a no-op.
`preview_report` runs the same decision without storing; `purge_expired` is retention.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from app.dns.lookup import (
    LookupOutcome,
    MultipleRecordsError,
    NoRecordError,
    RecordSyntaxError,
    TemporaryDnsError,
    lookup_many,
    lookup_tlsrpt,
)
from app.ingest import service as ingest
from app.report import store
from app.report.store import DomainState, NewReport
from app.resources import Resources
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


def reporter_of(resources: Resources) -> Reporter:
    report = resources.settings.report
    return Reporter(report.organization_name, report.contact_info)


def decide_before_dns(
    resources: Resources, aggregates: Sequence[PolicyAggregate]
) -> Decision | None:
    """Reasons not to report that need no DNS lookup, or None to go on."""
    # RFC 8460 §3: sessions that delivered a TLS report never cause a report alone.
    if sum(a.trigger_count for a in aggregates) == 0:
        return Decision("no_report", "only_report_delivery_results")
    if not resources.settings.report.send_success_only_days and not any(
        a.failure_count for a in aggregates
    ):
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
    )


@dataclass
class _Chunk:
    rows: list[DomainState] = field(default_factory=list)
    reports: list[NewReport] = field(default_factory=list)


async def build_day(
    resources: Resources,
    day: date,
    *,
    spread: Callable[[], float] = lambda: 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """Close `day` and build its reports; safe to run again and from several instances."""
    async with resources.pool.connection() as conn:
        async with conn.transaction():
            await ingest.close_day(conn, day)
        states = {s.policy_domain: s for s in await store.list_report_domains(conn, day)}
    by_domain: dict[str, list[PolicyAggregate]] = defaultdict(list)
    for aggregate in await ingest.day_aggregates(resources.pool, day):
        by_domain[aggregate.policy.policy_domain].append(aggregate)
    now = resources.clock()
    summary = BuildSummary(day)
    todo = []
    for domain in sorted(by_domain):
        state = states.get(domain)
        if state is not None and state.state != "pending":
            summary.already_done += 1
        elif state is not None and state.next_attempt_at and state.next_attempt_at > now:
            summary.pending += 1
            _note_retry(summary, state.next_attempt_at)
        else:
            todo.append(domain)
    for start in range(0, len(todo), CHUNK_SIZE):
        domains = todo[start : start + CHUNK_SIZE]
        await _build_chunk(resources, day, domains, by_domain, states, now, spread, summary)
        if progress is not None:
            progress(start + len(domains), len(todo))
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
            }
        },
    )
    return summary


async def _build_chunk(
    resources: Resources,
    day: date,
    domains: list[str],
    by_domain: dict[str, list[PolicyAggregate]],
    states: dict[str, DomainState],
    now: datetime,
    spread: Callable[[], float],
    summary: BuildSummary,
) -> None:
    decisions: dict[str, Decision] = {}
    to_look_up = []
    for domain in domains:
        early = decide_before_dns(resources, by_domain[domain])
        if early is None:
            to_look_up.append(domain)
        else:
            decisions[domain] = early
    # No transaction is open while DNS answers.
    outcomes: dict[str, LookupOutcome] = await lookup_many(resources.resolver, to_look_up)
    reporter = reporter_of(resources)
    for domain, outcome in outcomes.items():
        if isinstance(outcome, TemporaryDnsError):
            decisions[domain] = _retry(resources, states.get(domain), now, outcome)
        else:
            decisions[domain] = decide(reporter, day, domain, by_domain[domain], outcome)
    chunk = _Chunk()
    for domain, d in sorted(decisions.items()):
        previous = states.get(domain)
        attempts = (previous.attempts if previous else 0) + 1
        first = previous.first_attempt_at if previous and previous.first_attempt_at else now
        next_at = None if d.retry_in is None else now + timedelta(seconds=d.retry_in)
        chunk.rows.append(
            DomainState(day, domain, d.state, d.reason, d.detail, attempts, first, next_at, now)
        )
        if d.report is not None:
            chunk.reports.append(
                NewReport(
                    report_id=d.report.report_id,
                    policy_domain=domain,
                    report_json=d.report.json,
                    report_gzip=d.report.gzip,
                    filename=d.report.filename,
                    rua=d.rua,
                    kinds=d.kinds,
                    delays=tuple(max(0.0, spread()) for _ in d.rua),
                )
            )
    async with resources.pool.connection() as conn, conn.transaction():
        written = await store.upsert_report_domains(conn, day, chunk.rows)
        await store.insert_reports(
            conn, day, [r for r in chunk.reports if r.policy_domain in written]
        )
    for row in chunk.rows:
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
    resources: Resources, previous: DomainState | None, now: datetime, error: TemporaryDnsError
) -> Decision:
    """Backoff after a temporary DNS failure: pending with a delay, or given up."""
    settings = resources.settings.report
    attempts = (previous.attempts if previous else 0) + 1
    first = previous.first_attempt_at if previous and previous.first_attempt_at else now
    deadline = first + timedelta(hours=settings.dns_retry_max_hours)
    reason = f"dns_temporary_failure: {error}"[:500]
    if now >= deadline:
        return Decision("gave_up", reason)
    delay = settings.dns_retry_initial_seconds * 2 ** min(attempts - 1, 20)
    delay = min(delay, (deadline - now).total_seconds())  # one last try at the deadline
    return Decision("pending", reason, retry_in=delay)


def _note_retry(summary: BuildSummary, at: datetime) -> None:
    if summary.next_retry_at is None or at < summary.next_retry_at:
        summary.next_retry_at = at


async def build_pending(
    resources: Resources, *, spread: Callable[[], float] = lambda: 0.0
) -> list[BuildSummary]:
    """Run `build_day` again for every day with a due DNS retry (the scheduler's loop)."""
    async with resources.pool.connection() as conn:
        days = await store.list_due_pending_days(conn, resources.clock())
    return [await build_day(resources, day, spread=spread) for day in days]


@dataclass(frozen=True)
class Preview:
    """The exact JSON a domain's report has (`stored`) or would have, and its rua."""

    report_json: bytes
    rua: tuple[str, ...]
    stored: bool


async def preview_report(resources: Resources, day: date, policy_domain: str) -> Preview:
    """The report of (domain, day) as stored, or as building it now would make it.

    Raises NoReportError with the reason when nothing would be sent, TemporaryDnsError
    when DNS can not tell now. `policy_domain` must be normalised (A-label).
    """
    async with resources.pool.connection() as conn:
        stored = await store.get_report_by_domain(conn, day, policy_domain)
        state = await store.get_report_domain(conn, day, policy_domain)
    if stored is not None:
        return Preview(stored.report_json, tuple(stored.rua), stored=True)
    if state is not None and state.state in ("no_report", "gave_up"):
        raise NoReportError(state.reason or state.state, state.detail)
    aggregates = await ingest.day_aggregates(resources.pool, day, policy_domain)
    if not aggregates:
        raise NoReportError("no_results", f"no results for {policy_domain} on {day}")
    early = decide_before_dns(resources, aggregates)
    if early is not None:
        raise NoReportError(early.reason or early.state, early.detail)
    outcome: TlsrptRecord | Exception
    try:
        outcome = await lookup_tlsrpt(resources.resolver, policy_domain)
    except (NoRecordError, MultipleRecordsError, RecordSyntaxError) as exc:
        outcome = exc
    decision = decide(reporter_of(resources), day, policy_domain, aggregates, outcome)
    if decision.report is None:
        raise NoReportError(decision.reason or decision.state, decision.detail)
    return Preview(decision.report.json, decision.rua, stored=False)


@dataclass(frozen=True)
class DayListing:
    """A day's built reports with their deliveries, and every domain's build outcome."""

    reports: list[tuple[store.StoredReport, list[store.DeliveryState]]]
    domains: list[DomainState]


async def list_day(resources: Resources, day: date) -> DayListing:
    async with resources.pool.connection() as conn:
        reports = await store.list_reports(conn, day)
        deliveries = await store.list_deliveries(conn, [r.id for r in reports])
        domains = await store.list_report_domains(conn, day)
    by_report: dict[int, list[store.DeliveryState]] = defaultdict(list)
    for delivery in deliveries:
        by_report[delivery.report_pk].append(delivery)
    return DayListing([(r, by_report[r.id]) for r in reports], domains)


async def get_report(resources: Resources, pk: int) -> store.StoredReport | None:
    async with resources.pool.connection() as conn:
        return await store.get_report(conn, pk)


@dataclass(frozen=True)
class PurgeSummary:
    reports: int
    policy_rows: int


async def purge_expired(resources: Resources) -> PurgeSummary:
    """Retention: delete reports (and deliveries, outcomes) and counters past their days."""
    settings = resources.settings
    now = resources.clock()
    cutoff = now.date() - timedelta(days=settings.retention.reports_days)
    async with resources.pool.connection() as conn, conn.transaction():
        reports = await store.delete_reports_before(conn, cutoff)
    policy_rows = await ingest.purge_expired(resources.pool, now, settings)
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
