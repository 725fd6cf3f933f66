"""Exact pre-aggregated counters of libtlsrpt datagrams, one batch per UTC day.

`DayTallies` counts parsed datagrams as they come into the ingest `Tally` of their day;
`seal` turns them into `Batch`es: counters, not sessions, so a second of 50,000
datagrams to 1,000 domains is a batch of about 1,000 policies. A batch carries a random
`batch_id` under which the database records it once (a batch delivered again after a
lost acknowledgement is not counted twice). Its wire form, with RFC 8460 §4.4 names, is
both the spool record and the body of `POST /v1/tallies`:

    {"batch-id": "...", "day": "2025-06-01", "policies": [
        {"policy": {...}, "summary": {...}, "failure-details": [...],
         "recipient-domains": [{"recipient-domain": "example.org",
             "total-successful-session-count": 9, "total-failure-session-count": 1}]}]}
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.tlsrpt.libtlsrpt import Datagram
from app.tlsrpt.model import FailureDetail, Policy, PolicyAggregate, PolicyType, ResultType
from app.tlsrpt.tally import Tally
from app.tlsrpt.wire import format_policy


@dataclass(slots=True)
class Batch:
    """Counters of one UTC day, recorded all or nothing, once per `batch_id`."""

    day: date
    batch_id: str
    tally: Tally

    @property
    def results(self) -> int:
        """Policy results (sessions) in this batch."""
        return self.tally.sessions


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
    """The wire form of a batch (RFC 8460 §4.4 names, as the day-results API shows)."""
    policies = []
    for entry in batch.tally:
        aggregate = PolicyAggregate(
            entry.policy,
            entry.success_count,
            entry.failure_count,
            entry.trigger_count,
            list(entry.details.items()),
        )
        item = format_policy(aggregate)
        if entry.recipients:
            item["recipient-domains"] = [
                {
                    "recipient-domain": domain,
                    "total-successful-session-count": ok,
                    "total-failure-session-count": failed,
                }
                for domain, (ok, failed) in sorted(entry.recipients.items())
            ]
        policies.append(item)
    return {"batch-id": batch.batch_id, "day": batch.day.isoformat(), "policies": policies}


_DETAIL_FIELDS = (
    ("sending-mta-ip", "sending_mta_ip"),
    ("receiving-mx-hostname", "receiving_mx_hostname"),
    ("receiving-mx-helo", "receiving_mx_helo"),
    ("receiving-ip", "receiving_ip"),
    ("additional-information", "additional_information"),
    ("failure-reason-code", "failure_reason_code"),
)


def parse_batch(doc: dict[str, Any]) -> Batch:
    """Read back a batch `format_batch` wrote (a spool record); trusts its input."""
    day = date.fromisoformat(doc["day"])
    tally = Tally()
    for item in doc["policies"]:
        wire = item["policy"]
        policy = Policy(
            policy_type=PolicyType(wire["policy-type"]),
            policy_domain=wire["policy-domain"],
            policy_string=tuple(wire.get("policy-string", ())),
            mx_host=tuple(wire.get("mx-host", ())),
        )
        details = {
            FailureDetail(
                ResultType(d["result-type"]),
                **{attr: d.get(name) for name, attr in _DETAIL_FIELDS},
            ): d["failed-session-count"]
            for d in item.get("failure-details", ())
        }
        summary = item["summary"]
        add_policy_counts(
            tally,
            day,
            policy,
            successes=summary["total-successful-session-count"],
            failures=summary["total-failure-session-count"],
            details=details,
            recipients=[
                (
                    r["recipient-domain"],
                    r["total-successful-session-count"],
                    r["total-failure-session-count"],
                )
                for r in item.get("recipient-domains", ())
            ],
        )
    return Batch(day=day, batch_id=doc["batch-id"], tally=tally)


def add_policy_counts(
    tally: Tally,
    day: date,
    policy: Policy,
    *,
    successes: int,
    failures: int,
    details: dict[FailureDetail, int],
    recipients: list[tuple[str, int, int]],
) -> None:
    """Add one policy's pre-counted day, with its per-recipient-domain breakdown.

    The breakdown's sums must not exceed the totals; sessions it does not cover are
    counted without a recipient domain.
    """
    for domain, ok, failed in recipients:
        tally.add_counts(
            day, policy, successes=ok, failures=failed, details={}, recipient_domain=domain
        )
    tally.add_counts(
        day,
        policy,
        successes=successes - sum(r[1] for r in recipients),
        failures=failures - sum(r[2] for r in recipients),
        details=details,
    )
