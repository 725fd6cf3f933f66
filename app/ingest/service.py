"""Ingest: the one write path of session results into the day's counters (SPEC §3).

Every source calls it: `POST /v1/results` (`record_items`, or `record_results` of
`SessionResult`s), `POST /v1/tallies` and the collector (`record_tally`). The rules live
here once: the accepted window, closed days, semantic checks, counting, and the metrics
(accepted, refused by reason). A batch is all-or-nothing and committed before these
return. `IngestCommitter` writes the tallies that arrive together in one transaction
(group commit); a day being closed either sees a batch or makes it fail with
`ClosedDayError` (ingest holds the day's advisory lock shared, closing takes it
exclusively). Report building and the scheduler read, close and
purge days through the functions at the end, never through `store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from app import metrics
from app.clock import Clock
from app.config import Settings
from app.db.group_commit import GroupCommitQueue, Pending
from app.db.pool import Pool
from app.ingest import hours, store
from app.ingest.wire import ResultIn
from app.tlsrpt.model import FailureDetail, Policy, PolicyAggregate, ResultType
from app.tlsrpt.tally import Tally
from app.tlsrpt.wire import DETAIL_FIELDS

# Labels of `tlsrpt_ingest_rejected_batches_total`.
REFUSED_MALFORMED = "malformed"
REFUSED_TOO_LARGE = "too_large"
REFUSED_INVALID = "invalid"
REFUSED_OUT_OF_WINDOW = "out_of_window"
REFUSED_CLOSED_DAY = "closed_day"

# A refusal lists at most this many item problems.
MAX_REPORTED_PROBLEMS = 100


class IngestRefusedError(Exception):
    """A batch refused whole; `reason` is the metric label."""

    reason = REFUSED_INVALID


class InvalidResultsError(IngestRefusedError):
    """`problems` name each bad item's index, field and reason."""

    def __init__(self, problems: list[dict[str, Any]], total: int) -> None:
        self.problems = sorted(problems, key=lambda p: -1 if p["index"] is None else p["index"])
        bad = len({p["index"] for p in problems})
        super().__init__(f"{bad} of {total} results are invalid; nothing was stored")


class DayNotAcceptedError(IngestRefusedError):
    reason = REFUSED_OUT_OF_WINDOW

    def __init__(self, day: date, why: str) -> None:
        self.why = why
        super().__init__(f"day {day.isoformat()} is not accepted: {why}")


class ClosedDayError(IngestRefusedError):
    """Results for a day whose reports are already built (SPEC §3: refused, never merged)."""

    reason = REFUSED_CLOSED_DAY

    def __init__(self, days: Sequence[date]) -> None:
        self.days = sorted(days)
        super().__init__("closed: " + ", ".join(d.isoformat() for d in self.days))


def note_refused(reason: str) -> None:
    """Count a batch refused before it reached this module (unreadable, too large)."""
    metrics.INGEST_REJECTED.labels(reason).inc()


def oldest_accepted_day(now: datetime, settings: Settings) -> date:
    """Results for days before this are past retention (refused, and purged)."""
    return now.astimezone(UTC).date() - timedelta(days=settings.retention.results_days)


def accepted_window(now: datetime, settings: Settings) -> tuple[datetime, datetime]:
    """The times accepted at `now`: from the first instant of the oldest retained UTC day
    to a little clock skew into the future."""
    earliest = datetime.combine(oldest_accepted_day(now, settings), time(), UTC)
    return earliest, now + timedelta(seconds=settings.ingest.max_future_seconds)


def timestamp_problem(ts: datetime, now: datetime, settings: Settings) -> str | None:
    """Why a session at `ts` is refused at `now`, or None."""
    earliest, latest = accepted_window(now, settings)
    if ts > latest:
        return f"more than {settings.ingest.max_future_seconds} s in the future"
    if ts < earliest:
        return f"older than the retention of {settings.retention.results_days} days"
    return None


# The detail of a success without failure-detail fields (most sessions): one object.
SUCCESS = FailureDetail(ResultType.SUCCESS)


@dataclass(frozen=True, slots=True)
class SessionResult:
    """The TLS outcome of `count` identical sessions; `detail.result_type` is `success`
    for sessions without failure."""

    policy: Policy
    detail: FailureDetail
    timestamp: datetime | None = None
    count: int = 1
    report_delivery: bool = False
    recipient_domain: str | None = None


def _refuse(error: IngestRefusedError) -> IngestRefusedError:
    note_refused(error.reason)
    return error


async def record_results(
    committer: IngestCommitter, clock: Clock, settings: Settings, results: Sequence[SessionResult]
) -> int:
    """Count and commit sessions; returns how many. Raise InvalidResultsError or
    ClosedDayError, storing nothing. A result without a timestamp happened now."""
    sessions = (
        (r.policy, r.detail, r.timestamp, r.count, r.report_delivery, r.recipient_domain)
        for r in results
    )
    return await _record(committer, clock, settings, sessions, len(results))


async def record_items(
    committer: IngestCommitter, clock: Clock, settings: Settings, items: Sequence[ResultIn]
) -> int:
    """`record_results` of validated wire items (`POST /v1/results`), tallied straight
    from them: no intermediate object per item."""
    sessions = (
        (
            item.policy.to_policy(),
            detail_of(item),
            item.timestamp,
            item.count,
            item.report_delivery,
            item.recipient_domain,
        )
        for item in items
    )
    return await _record(committer, clock, settings, sessions, len(items))


# The fields of a session that count: policy, detail, timestamp, count, report-delivery,
# recipient domain.
_Session = tuple[Policy, FailureDetail, "datetime | None", int, bool, "str | None"]
_DETAIL_ATTRS = frozenset(attr for _, attr in DETAIL_FIELDS)


def detail_of(item: ResultIn) -> FailureDetail:
    """The failure detail of a wire item; SUCCESS (one shared object) for a success
    without detail fields, most sessions."""
    if item.result_type is ResultType.SUCCESS and _DETAIL_ATTRS.isdisjoint(item.model_fields_set):
        return SUCCESS
    return item.failure_detail(item.result_type)


async def _record(
    committer: IngestCommitter,
    clock: Clock,
    settings: Settings,
    sessions: Iterable[_Session],
    total: int,
) -> int:
    now = clock()
    earliest, latest = accepted_window(now, settings)
    tally = Tally()
    problems: list[dict[str, Any]] = []
    for index, (policy, detail, timestamp, count, report_delivery, recipient) in enumerate(
        sessions
    ):
        failure: FailureDetail | None = detail
        if detail is SUCCESS:
            failure = None
        elif detail.result_type is ResultType.SUCCESS:
            extra = [name for name, attr in DETAIL_FIELDS if getattr(detail, attr) is not None]
            if extra:
                why = f"failure-detail fields on a success result: {', '.join(extra)}"
                problems.append({"index": index, "field": None, "reason": why})
                continue
            failure = None
        ts = timestamp or now
        if not earliest <= ts <= latest:
            reason = timestamp_problem(ts, now, settings)
            problems.append({"index": index, "field": "timestamp", "reason": reason})
            continue
        tally.add_session(
            ts.astimezone(UTC).date(),
            policy,
            failure,
            count=count,
            report_delivery=report_delivery,
            recipient_domain=recipient,
        )
    if problems:
        raise _refuse(InvalidResultsError(problems, total))
    await _commit(committer, tally, None)
    metrics.INGEST_RESULTS.inc(total)
    metrics.INGEST_SESSIONS.inc(tally.sessions)
    _count_by_result(tally)
    return tally.sessions


async def record_tally(
    committer: IngestCommitter,
    clock: Clock,
    settings: Settings,
    tally: Tally,
    *,
    batch_id: str | None = None,
) -> bool:
    """Add pre-counted sessions (a tally of any days) in one transaction; raise
    DayNotAcceptedError or ClosedDayError, storing nothing.

    With a `batch_id`, a batch already recorded under that id adds nothing and False is
    returned, even if its day has closed since.
    """
    now = clock()
    for day in sorted(tally.days()):
        why = timestamp_problem(datetime.combine(day, time(), UTC), now, settings)
        if why is not None:
            raise _refuse(DayNotAcceptedError(day, why))
    recorded = await _commit(committer, tally, batch_id)
    if recorded:
        metrics.INGEST_RESULTS.inc(len(tally))
        metrics.INGEST_SESSIONS.inc(tally.sessions)
        _count_by_result(tally)
    return recorded


def _count_by_result(tally: Tally) -> None:
    """Sessions by policy type and result type (bounded: 3 x 12 series)."""
    counts: dict[tuple[str, str], int] = {}
    for entry in tally:
        ptype = entry.policy.policy_type.value
        if entry.success_count:
            key = (ptype, ResultType.SUCCESS.value)
            counts[key] = counts.get(key, 0) + entry.success_count
        for detail, n in entry.details.items():
            key = (ptype, detail.result_type.value)
            counts[key] = counts.get(key, 0) + n
    for (ptype, rtype), n in counts.items():
        metrics.INGEST_BY_RESULT.labels(ptype, rtype).inc(n)


async def _commit(committer: IngestCommitter, tally: Tally, batch_id: str | None) -> bool:
    if not len(tally):
        return True
    try:
        return await committer.submit((tally, batch_id))
    except ClosedDayError as exc:
        raise _refuse(exc) from None


# Tallies of fewer (day, policy) entries than this (single results, small batches) have
# writers of their own: two, so one group is written while the other waits for its
# commit (bench/ingest.py, 64 clients of single results: 2,276 -> 3,012 requests/s,
# p99 96 -> 47 ms). Small groups seldom share a counter row, so they do not wait for
# each other as concurrent large batches do.
SMALL_TALLY = 50
SMALL_WRITERS = 2


class IngestCommitter(GroupCommitQueue[tuple[Tally, "str | None"], bool]):
    """Writes the tallies that arrive together in one transaction.

    Each stays all-or-nothing: one whose day turned out to be closed fails alone with
    ClosedDayError, a repeated batch id settles alone with False; the others are merged
    and written by one set of multi-row upserts.

    One writer of large tallies by default: every batch touches the same popular
    counters, so concurrent writers of one process mostly wait on each other's row locks
    (`Lock transactionid`), while with one the batches that arrive meanwhile are merged
    into the next group
    (bench/peer.py, 100 batches of 1,000: 77,000 counter rows written instead of
    102,000-116,000 with 3 writers). A group without batch ids (the common case) is sent
    in one pipeline, optimistically: day locks, the closed-day check and the upserts in
    one round trip, then the commit; if a day turned out closed the transaction is
    rolled back and the group is settled one by one (`_write_checked`). Small tallies
    have writers of their own (`SMALL_TALLY`).
    """

    def __init__(self, pool: Pool, clock: Clock, *, writers: int = 1) -> None:
        super().__init__(
            writers=writers,
            budget=20_000,
            small_size=SMALL_TALLY,
            small_writers=SMALL_WRITERS,
        )
        self._pool = pool
        self._clock = clock
        # Days whose counter partitions this process has seen to exist.
        self._partitioned: set[date] = set()

    async def _ensure_partitions(self, days: list[date]) -> None:
        """Create missing day partitions in a short transaction of their own, committed
        before the group's. Not inside the group's: ensure_count_partitions serialises
        creators of every instance with an advisory lock, and ATTACH PARTITION locks the
        parent SHARE UPDATE EXCLUSIVE; both are held to commit, so another instance's
        first write of a day (and retention's DROP) would wait for this whole group. A
        partition the other instance has not committed yet is invisible to it, so it
        must wait for that commit anyway: a short one is the right one to wait for."""
        missing = [d for d in days if d not in self._partitioned]
        if missing:
            async with self._pool.connection() as conn, conn.transaction():
                await store.ensure_partitions(conn, missing)
            self._partitioned.update(missing)

    def size(self, item: tuple[Tally, str | None]) -> int:
        return len(item[0])

    async def write_group(self, group: list[Pending[tuple[Tally, str | None], bool]]) -> None:
        days = sorted(set().union(*(p.item[0].days() for p in group)))
        await self._ensure_partitions(days)
        try:
            await self._write(days, group)
        except psycopg.errors.CheckViolation:
            # "no partition for row": retention dropped a day this process had seen.
            self._partitioned.clear()
            await self._ensure_partitions(days)
            await self._write(days, group)

    async def _write(
        self, days: list[date], group: list[Pending[tuple[Tally, str | None], bool]]
    ) -> None:
        if all(p.item[1] is None for p in group) and await self._write_pipelined(days, group):
            for pending in group:
                pending.settle(True)
            return
        await self._write_checked(days, group)

    async def _write_pipelined(
        self, days: list[date], group: list[Pending[tuple[Tally, str | None], bool]]
    ) -> bool:
        """Write the whole group unless one of `days` is closed; False: nothing written."""
        merged = group[0].item[0] if len(group) == 1 else Tally()
        if len(group) > 1:
            for pending in group:
                merged.merge(pending.item[0])
        async with self._pool.connection() as conn:
            try:
                async with conn.pipeline(), conn.transaction():
                    await store.lock_days_shared(conn, days)
                    closed = await store.start_list_closed_days(conn, days)
                    await store.upsert_counts(conn, merged)
                    # Per hour of receipt, for the same-day alerts (app.ingest.hours).
                    await hours.add_hours(conn, [merged], self._clock())
                    if await closed.fetchall():
                        raise _DayClosed
            except _DayClosed:
                return False
        return True

    async def _write_checked(
        self, days: list[date], group: list[Pending[tuple[Tally, str | None], bool]]
    ) -> None:
        accepted: list[Pending[tuple[Tally, str | None], bool]] = []
        repeated = []
        async with self._pool.connection() as conn, conn.transaction():
            await store.lock_days_shared(conn, days)
            closed = set(await store.list_closed_days(conn, days))
            for pending in group:
                tally, batch_id = pending.item
                refused = closed & tally.days()
                if refused:
                    if batch_id is not None and await store.get_batch_exists(conn, batch_id):
                        repeated.append(pending)
                    else:
                        pending.fail(ClosedDayError(sorted(refused)))
                elif batch_id is not None and not await store.insert_batch(
                    conn, batch_id, max(tally.days()), self._clock()
                ):
                    repeated.append(pending)
                else:
                    accepted.append(pending)
            if len(accepted) == 1:
                await store.upsert_counts(conn, accepted[0].item[0])
            elif accepted:
                merged = Tally()
                for pending in accepted:
                    merged.merge(pending.item[0])
                await store.upsert_counts(conn, merged)
            # Per hour of receipt, for the same-day alerts (app.ingest.hours).
            await hours.add_hours(conn, [p.item[0] for p in accepted], self._clock())
        for pending in accepted:
            pending.settle(True)
        for pending in repeated:
            pending.settle(False)


class _DayClosed(Exception):
    """Rolls back an optimistic group write that met a closed day."""


# The read and maintenance side, for report building and the scheduler.


async def close_day(pool: Pool, clock: Clock, day: date) -> bool:
    """Close a day; True if this call closed it.

    Waits for in-flight batches of that day to commit; batches after it get
    ClosedDayError. The caller builds the day's reports after this returns. The day's
    totals are stored with it (`views.day_totals` reads them).
    """
    async with pool.connection() as conn, conn.transaction():
        await store.lock_day_exclusive(conn, day)
        closed = await store.upsert_day_closed(conn, day, clock())
        if closed:
            await store.mark_day_totals(conn, day)
        return closed


async def day_aggregates(
    pool: Pool, day: date, policy_domains: Sequence[str] | None = None
) -> list[PolicyAggregate]:
    """A day's counters (of these policy domains; all when None), by policy domain."""
    async with pool.connection() as conn:
        return await store.list_day_aggregates(conn, day, policy_domains)


async def day_domains(pool: Pool, day: date) -> list[str]:
    """The policy domains with results on `day`, sorted."""
    async with pool.connection() as conn:
        return await store.list_day_domains(conn, day)


async def open_days_before(pool: Pool, day: date) -> list[date]:
    """Days with results, not closed yet, before `day`."""
    async with pool.connection() as conn:
        return await store.list_open_days_before(conn, day)


async def purge_expired(pool: Pool, clock: Clock, settings: Settings) -> int:
    """Drop the counters of days past retention (their partitions: no row by row delete);
    returns the number of policy rows they held. Also creates today's and tomorrow's
    partitions ahead (the scheduler calls this daily), so ingest seldom has to."""
    now = clock()
    async with pool.connection() as conn, conn.transaction():
        dropped = await store.drop_counts_before(conn, oldest_accepted_day(now, settings))
    today = now.astimezone(UTC).date()
    async with pool.connection() as conn, conn.transaction():
        await store.ensure_partitions(conn, [today, today + timedelta(days=1)])
    return dropped
