"""Exact pre-aggregated counters of libtlsrpt datagrams, per UTC day.

A `Tally` counts parsed datagrams as they come; `seal` turns it into one `Batch` per UTC
day: counters, not sessions, so a second of 50,000 datagrams to 1,000 domains is a batch of
about 1,000 policies. A batch has a random `batch_id` under which a sink records it once,
and a wire form with RFC 8460 §4.4 names (`policy`, `summary`, `failure-details`,
`failed-session-count`) that is both the spool record and the body of `POST /v1/tallies`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from app.tlsrpt.libtlsrpt import Datagram
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType


@dataclass(slots=True)
class PolicyCounts:
    """Sessions of one policy on one day; `details` counts failed sessions per detail."""

    sessions: int = 0
    failures: int = 0
    details: dict[FailureDetail, int] = field(default_factory=dict)

    @property
    def successes(self) -> int:
        return self.sessions - self.failures


@dataclass(slots=True)
class Batch:
    """Counters of one UTC day, recorded all or nothing, once per `batch_id`."""

    day: date
    batch_id: str
    policies: dict[Policy, PolicyCounts]

    @property
    def results(self) -> int:
        """Policy results (sessions) in this batch."""
        return sum(c.sessions for c in self.policies.values())


class Tally:
    """Counts datagrams per UTC day until sealed into batches."""

    def __init__(self) -> None:
        self._days: dict[date, dict[Policy, PolicyCounts]] = {}
        self.results = 0

    def add(self, day: date, datagram: Datagram, times: int = 1) -> None:
        """Count `times` identical datagrams received on `day` (LIBTLSRPT.md counting)."""
        policies = self._days.get(day)
        if policies is None:
            policies = self._days[day] = {}
        for result in datagram.results:
            counts = policies.get(result.policy)
            if counts is None:
                counts = policies[result.policy] = PolicyCounts()
            # Each policy object is one session; `f` says whether it failed.
            counts.sessions += times
            if result.failed:
                counts.failures += times
            # Each failure-detail object is one failed session of that detail.
            details = counts.details
            for detail in result.details:
                details[detail] = details.get(detail, 0) + times
        self.results += len(datagram.results) * times

    def seal(self) -> list[Batch]:
        """Return one batch per day, oldest first, and start counting afresh."""
        days, self._days, self.results = self._days, {}, 0
        return [
            Batch(day=day, batch_id=uuid.uuid4().hex, policies=policies)
            for day, policies in sorted(days.items())
        ]


_DETAIL_FIELDS = (
    ("sending-mta-ip", "sending_mta_ip"),
    ("receiving-mx-hostname", "receiving_mx_hostname"),
    ("receiving-mx-helo", "receiving_mx_helo"),
    ("receiving-ip", "receiving_ip"),
    ("additional-information", "additional_information"),
    ("failure-reason-code", "failure_reason_code"),
)


def format_batch(batch: Batch) -> dict[str, Any]:
    """The wire form of a batch (RFC 8460 §4.4 names); absent detail fields left out."""
    policies = []
    for policy, counts in batch.policies.items():
        details = []
        for detail, count in counts.details.items():
            item: dict[str, Any] = {"result-type": detail.result_type.value}
            for wire, attr in _DETAIL_FIELDS:
                value = getattr(detail, attr)
                if value is not None:
                    item[wire] = value
            item["failed-session-count"] = count
            details.append(item)
        policies.append(
            {
                "policy": {
                    "policy-type": policy.policy_type.value,
                    "policy-domain": policy.policy_domain,
                    "policy-string": list(policy.policy_string),
                    "mx-host": list(policy.mx_host),
                },
                "summary": {
                    "total-successful-session-count": counts.successes,
                    "total-failure-session-count": counts.failures,
                },
                "failure-details": details,
            }
        )
    return {"batch-id": batch.batch_id, "day": batch.day.isoformat(), "policies": policies}


def parse_batch(doc: dict[str, Any]) -> Batch:
    """Read back a batch this module formatted (a spool record); trusts its input."""
    policies: dict[Policy, PolicyCounts] = {}
    for item in doc["policies"]:
        wire = item["policy"]
        policy = Policy(
            policy_type=PolicyType(wire["policy-type"]),
            policy_domain=wire["policy-domain"],
            policy_string=tuple(wire["policy-string"]),
            mx_host=tuple(wire["mx-host"]),
        )
        summary = item["summary"]
        failures = summary["total-failure-session-count"]
        counts = PolicyCounts(
            sessions=summary["total-successful-session-count"] + failures, failures=failures
        )
        for d in item["failure-details"]:
            detail = FailureDetail(
                result_type=ResultType(d["result-type"]),
                **{attr: d.get(wire_name) for wire_name, attr in _DETAIL_FIELDS},
            )
            counts.details[detail] = d["failed-session-count"]
        policies[policy] = counts
    return Batch(day=date.fromisoformat(doc["day"]), batch_id=doc["batch-id"], policies=policies)
