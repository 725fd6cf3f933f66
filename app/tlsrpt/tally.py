"""In-memory merging of session results into per-(UTC day, policy) counters (SPEC §3).

A `Tally` is what one ingest batch (or one collector flush) adds to the database: equal
policies share one counter set, equal failure details one count, so a batch of thousands
of sessions becomes a few rows to upsert. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date

from app.tlsrpt.model import FailureDetail, Policy


@dataclass(slots=True)
class PolicyTally:
    day: date
    policy: Policy
    success_count: int = 0
    failure_count: int = 0
    trigger_count: int = 0
    details: dict[FailureDetail, int] = field(default_factory=dict)
    # recipient domain -> [successes, failures]
    recipients: dict[str, list[int]] = field(default_factory=dict)


class Tally:
    """Counters for any number of days and policies."""

    def __init__(self) -> None:
        self._entries: dict[tuple[date, Policy], PolicyTally] = {}
        self.sessions = 0

    def _entry(self, day: date, policy: Policy) -> PolicyTally:
        entry = self._entries.get((day, policy))
        if entry is None:
            entry = self._entries[(day, policy)] = PolicyTally(day, policy)
        return entry

    def add_session(
        self,
        day: date,
        policy: Policy,
        detail: FailureDetail | None,
        *,
        count: int = 1,
        report_delivery: bool = False,
        recipient_domain: str | None = None,
    ) -> None:
        """Add `count` identical sessions; `detail` None means success."""
        entry = self._entry(day, policy)
        if detail is None:
            entry.success_count += count
        else:
            entry.failure_count += count
            entry.details[detail] = entry.details.get(detail, 0) + count
        if not report_delivery:
            entry.trigger_count += count
        if recipient_domain is not None:
            pair = entry.recipients.setdefault(recipient_domain, [0, 0])
            pair[0 if detail is None else 1] += count
        self.sessions += count

    def add_counts(
        self,
        day: date,
        policy: Policy,
        *,
        successes: int,
        failures: int,
        details: Mapping[FailureDetail, int],
        report_delivery: bool = False,
    ) -> None:
        """Add pre-counted sessions whose details need not match the failures one to one.

        RFC 8460 §4.4: failure-detail counts are not exclusive of each other, so a
        sender may attach several details to one failed session (or, as libtlsrpt
        allows, to a success); they are counted as given.
        """
        entry = self._entry(day, policy)
        entry.success_count += successes
        entry.failure_count += failures
        if not report_delivery:
            entry.trigger_count += successes + failures
        for detail, n in details.items():
            entry.details[detail] = entry.details.get(detail, 0) + n
        self.sessions += successes + failures

    def merge(self, other: Tally) -> None:
        for entry in other:
            self.add_counts(
                entry.day,
                entry.policy,
                successes=entry.success_count,
                failures=entry.failure_count,
                details=entry.details,
                report_delivery=True,
            )
            mine = self._entries[(entry.day, entry.policy)]
            mine.trigger_count += entry.trigger_count
            for domain, (ok, failed) in entry.recipients.items():
                pair = mine.recipients.setdefault(domain, [0, 0])
                pair[0] += ok
                pair[1] += failed

    def days(self) -> set[date]:
        return {day for day, _ in self._entries}

    def __iter__(self) -> Iterator[PolicyTally]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
