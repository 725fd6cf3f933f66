"""Reports that others send us (RFC 8460 §4.4), as read by `app.tlsrpt.received_json`.

A received report keeps what its sender wrote, normalised only where the meaning is
unchanged: domains as A-labels, IPs in canonical form, blank optional strings as
absent. Unknown `result-type` values stay as the sender wrote them, unknown keys are
kept verbatim in `extra`, and what could not be read is named in `warnings` (the stored
JSON keeps it), so nothing a sender says is lost on the way to storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from app.tlsrpt.model import PolicyType, ResultType

KNOWN_RESULT_TYPES = frozenset(t.value for t in ResultType)


@dataclass(frozen=True, slots=True)
class Limits:
    """Item caps for one report (settings `inbound.max_policies`, `max_failure_details`)."""

    max_policies: int = 10_000
    max_failure_details: int = 100_000

    @property
    def max_containers(self) -> int:
        # An upper bound on the JSON objects and arrays of a report within the caps:
        # six per policy (entry, policy, policy-string, mx-host, summary, details),
        # one per failure detail, and room for the top level and unknown keys.
        return 6 * self.max_policies + self.max_failure_details + 1000


@dataclass(frozen=True, slots=True)
class ReceivedFailure:
    """One `failure-details` entry; `result_type` verbatim, even when unknown."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def known_type(self) -> bool:
        return self.result_type in KNOWN_RESULT_TYPES


@dataclass(frozen=True, slots=True)
class ReceivedPolicy:
    policy_type: PolicyType
    policy_domain: str
    policy_string: tuple[str, ...]
    mx_host: tuple[str, ...]
    successful_sessions: int
    failed_sessions: int
    failures: tuple[ReceivedFailure, ...] = ()
    # Unknown keys of the entry; those of `policy` and `summary` as `policy.x`, `summary.x`.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    organization_name: str
    contact_info: str | None
    report_id: str
    start_at: datetime
    end_at: datetime
    policies: tuple[ReceivedPolicy, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    # What was read leniently: flagged fields, policies and details left uncounted.
    warnings: tuple[ReportProblem, ...] = ()

    @property
    def day(self) -> date:
        """The UTC day the report is about: the day its range starts."""
        return self.start_at.date()

    @property
    def has_failures(self) -> bool:
        return any(p.failed_sessions or p.failures for p in self.policies)


@dataclass(frozen=True, slots=True)
class ReportProblem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class InvalidReportError(Exception):
    """The body is not an RFC 8460 report; `problems` name each path and reason."""

    def __init__(self, problems: list[ReportProblem]) -> None:
        super().__init__(str(problems[0]) if problems else "not a TLSRPT report")
        self.problems = problems


class ReportTooLargeError(Exception):
    """The report has more items than the configured caps allow."""
