"""What operators see of report building: previews, a day's listing, stored reports.

`preview_report` runs the same decision as `build_day` (`service.decide`) without
storing anything, so a preview of a day not yet built is exactly what building it now
would produce; once built, the stored bytes are returned. Both name every rua of the
record that gets no report, with the reason (`RuaNotUsed`): pages, the API and the CLI
show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from app.config import ReportSettings
from app.db.pool import Pool
from app.delivery import service as delivery
from app.delivery import suppression
from app.delivery.service import DeliveryRow
from app.dns.lookup import MultipleRecordsError, NoRecordError, RecordSyntaxError, lookup_tlsrpt
from app.dns.resolver import TxtResolver
from app.ingest import service as ingest
from app.report import store
from app.report.service import NoReportError, decide, decide_before_dns, reporter_of
from app.report.store import DomainOutcome, DomainState
from app.report.store import StoredReport as StoredReport
from app.tlsrpt.record import TlsrptRecord


@dataclass(frozen=True)
class RuaNotUsed:
    """A rua of the domain's record that gets no report, and why: a scheme other than
    mailto/https, an address or host that can not be parsed, or a suppression."""

    rua: str
    reason: str


@dataclass(frozen=True)
class Preview:
    """The exact JSON a domain's report has (`stored`) or would have, its rua, and the
    record's rua that get nothing, with the reason (never dropped silently)."""

    report_json: bytes
    rua: tuple[str, ...]
    stored: bool
    not_used: tuple[RuaNotUsed, ...] = ()


def rua_not_used(report: StoredReport) -> tuple[RuaNotUsed, ...]:
    """The rua of a built report's record that it is not sent to, with the reason."""
    return tuple(RuaNotUsed(u["rua"], u["reason"]) for u in report.unusable_rua or ())


async def _suppressed(pool: Pool, rua: tuple[str, ...], now: datetime) -> list[RuaNotUsed]:
    active = await suppression.active_suppressions(pool, rua, now)
    return [RuaNotUsed(u, f"suppressed: {active[u]}") for u in rua if u in active]


async def preview_report(
    pool: Pool,
    resolver: TxtResolver,
    settings: ReportSettings,
    day: date,
    policy_domain: str,
    *,
    now: datetime | None = None,
) -> Preview:
    """The report of (domain, day) as stored, or as building it now would make it.

    Raises NoReportError with the reason when nothing would be sent, TemporaryDnsError
    when DNS can not tell now. `policy_domain` must be normalised (A-label). With `now`,
    rua suppressed at that time are named in `not_used` too.
    """
    async with pool.connection() as conn:
        stored = await store.get_report_by_domain(conn, day, policy_domain)
        state = await store.get_report_domain(conn, day, policy_domain)
    if stored is not None:
        not_used = rua_not_used(stored)
        if now is not None:
            not_used += tuple(await _suppressed(pool, tuple(stored.rua), now))
        return Preview(stored.report_json, tuple(stored.rua), stored=True, not_used=not_used)
    if state is not None and state.state in ("no_report", "gave_up"):
        raise NoReportError(state.reason or state.state, state.detail)
    aggregates = await ingest.day_aggregates(pool, day, [policy_domain])
    if not aggregates:
        raise NoReportError("no_results", f"no results for {policy_domain} on {day}")
    early = decide_before_dns(settings, aggregates)
    if early is not None:
        raise NoReportError(early.reason or early.state, early.detail)
    outcome: TlsrptRecord | Exception
    try:
        outcome = await lookup_tlsrpt(resolver, policy_domain)
    except (NoRecordError, MultipleRecordsError, RecordSyntaxError) as exc:
        outcome = exc
    decision = decide(reporter_of(settings), day, policy_domain, aggregates, outcome)
    if decision.report is None:
        raise NoReportError(decision.reason or decision.state, decision.detail)
    not_used = tuple(RuaNotUsed(uri, why) for uri, why in decision.unusable)
    if now is not None:
        not_used += tuple(await _suppressed(pool, decision.rua, now))
    return Preview(decision.report.json, decision.rua, stored=False, not_used=not_used)


@dataclass(frozen=True)
class DayListing:
    """A day's built reports with their deliveries, and every domain's build outcome.

    `not_built` are domains with results but no outcome yet (the day is still open, or
    building has not reached them): `preview_report` shows what they would get.
    """

    reports: list[tuple[StoredReport, list[DeliveryRow]]]
    domains: list[DomainState]
    not_built: list[str]


async def list_day(pool: Pool, day: date) -> DayListing:
    async with pool.connection() as conn:
        reports = await store.list_reports(conn, day)
        domains = await store.list_report_domains(conn, day)
    by_report = await delivery.deliveries_of(pool, [r.id for r in reports])
    with_results = await ingest.day_domains(pool, day)
    settled = {d.policy_domain for d in domains}
    return DayListing(
        [(r, by_report[r.id]) for r in reports],
        domains,
        [d for d in with_results if d not in settled],
    )


async def get_report(pool: Pool, pk: int) -> StoredReport | None:
    async with pool.connection() as conn:
        return await store.get_report(conn, pk)


async def domain_outcomes(
    pool: Pool, day: date, policy_domains: list[str]
) -> dict[str, DomainOutcome]:
    """The build outcome (and report id, when built) of each of these domains that has one."""
    async with pool.connection() as conn:
        rows = await store.list_domain_outcomes(conn, day, policy_domains)
    return {row.policy_domain: row for row in rows}


async def outcome_counts(pool: Pool, days: list[date]) -> dict[str, int]:
    """Domains per build state (`pending`, `built`, `no_report`, `gave_up`) over these days."""
    async with pool.connection() as conn:
        return await store.count_report_domains_by_state(conn, days)
