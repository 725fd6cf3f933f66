"""Exact pre-aggregated counters of libtlsrpt datagrams, one batch per UTC day.

`DayTallies` counts parsed datagrams into the `Tally` of their day; `seal` turns them
into `Batch`es of counters, not sessions (a second of 50,000 datagrams to 1,000 domains
is about 1,000 policies), each under a random `batch_id` the database records once. The
wire form, `app.ingest.wire.TalliesIn`, is both the spool record and the body of
`POST /v1/tallies`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.ingest.wire import TalliesIn, format_tallies
from app.tlsrpt.libtlsrpt import Datagram
from app.tlsrpt.model import FailureDetail
from app.tlsrpt.tally import Tally


@dataclass(slots=True)
class Batch:
    """Counters of one UTC day, recorded all or nothing, once per `batch_id`."""

    day: date
    batch_id: str
    tally: Tally


def count_datagram(tally: Tally, day: date, datagram: Datagram, times: int = 1) -> None:
    """Add `times` identical datagrams received on `day` (shared/LIBTLSRPT.md counting)."""
    for result in datagram.results:
        # Each failure-detail object is one failed session of that detail; details are
        # not exclusive of each other nor tied to `f` (RFC 8460 §4.4, libtlsrpt).
        details: dict[FailureDetail, int] = {}
        for detail in result.details:
            details[detail] = details.get(detail, 0) + times
        # Each policy object is one session; `f` says whether it failed.
        tally.add_counts(
            day,
            result.policy,
            successes=0 if result.failed else times,
            failures=times if result.failed else 0,
            details=details,
            recipient_domain=datagram.recipient_domain,
        )


class DayTallies:
    """Counts datagrams per UTC day until sealed into batches."""

    def __init__(self) -> None:
        self._days: dict[date, Tally] = {}

    @property
    def results(self) -> int:
        return sum(t.sessions for t in self._days.values())

    def add(self, day: date, datagram: Datagram, times: int = 1) -> None:
        tally = self._days.get(day)
        if tally is None:
            tally = self._days[day] = Tally()
        count_datagram(tally, day, datagram, times)

    def seal(self) -> list[Batch]:
        """One batch per day, oldest first; counting starts afresh."""
        days, self._days = self._days, {}
        return [
            Batch(day=day, batch_id=uuid.uuid4().hex, tally=tally)
            for day, tally in sorted(days.items())
        ]


def format_batch(batch: Batch) -> dict[str, Any]:
    """The wire form of a batch: a `TalliesIn` body (RFC 8460 §4.4 names)."""
    return format_tallies(batch.batch_id, batch.day, batch.tally)


def parse_batch(doc: dict[str, Any]) -> Batch:
    """Read back a batch `format_batch` wrote (a spool record), by the same model the
    tallies API validates with."""
    tallies = TalliesIn.model_validate(doc)
    assert tallies.batch_id is not None
    return Batch(day=tallies.day, batch_id=tallies.batch_id, tally=tallies.to_tally())
