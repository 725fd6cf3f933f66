"""The two ingest bodies, built on the RFC 8460 wire model (`app.tlsrpt.wire`):
`ResultsIn` carries sessions (SPEC §3); `TalliesIn` (also the collector's batches and
spool records) one UTC day of exact counters as §4.4 `policies` entries, with an
optional per-recipient-domain breakdown (failure-detail counts are taken as given)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.tlsrpt.model import FailureDetail, PolicyAggregate, ResultType
from app.tlsrpt.tally import Tally
from app.tlsrpt.wire import (
    WIRE,
    Domain,
    FailureDetailCountIn,
    FailureDetailFields,
    OptDomain,
    PolicyIn,
    SummaryIn,
    format_policy,
)


class ResultIn(FailureDetailFields):
    """The TLS outcome of `count` identical SMTP sessions for one policy."""

    model_config = WIRE

    policy: PolicyIn
    result_type: ResultType = Field(
        alias="result-type", description="`success` or an RFC 8460 §4.3 failure type."
    )
    recipient_domain: OptDomain = Field(
        default=None, alias="recipient-domain", description="RCPT TO domain, for breakdowns."
    )
    timestamp: AwareDatetime | None = Field(
        default=None,
        description="When the session happened (RFC 3339 with offset); picks "
        "the UTC day. Default: time of receipt.",
    )
    # Strict: a JSON integer, as the schema says (not "5"; received reports, read by
    # `app.tlsrpt.received`, stay lenient).
    count: int = Field(default=1, ge=1, le=1_000_000_000, strict=True)
    report_delivery: bool = Field(
        default=False,
        strict=True,  # true or false, as the schema says; not "yes" nor 1
        alias="report-delivery",
        description="The session delivered a TLS report: counted, but never alone causes "
        "a report (RFC 8460 §3).",
    )


class ResultsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results: list[ResultIn] = Field(min_length=1)


class RecipientCountIn(BaseModel):
    """Sessions of the policy by RCPT TO domain (for breakdowns; not in reports)."""

    model_config = WIRE

    recipient_domain: Domain = Field(alias="recipient-domain")
    total_successful_session_count: int = Field(alias="total-successful-session-count", ge=0)
    total_failure_session_count: int = Field(alias="total-failure-session-count", ge=0)


class PolicyTallyIn(BaseModel):
    """One policy's counters for the day."""

    model_config = WIRE

    policy: PolicyIn
    summary: SummaryIn
    failure_details: list[FailureDetailCountIn] = Field(
        default_factory=list, alias="failure-details", max_length=100_000
    )
    recipient_domains: list[RecipientCountIn] = Field(
        default_factory=list,
        alias="recipient-domains",
        max_length=100_000,
        description="Optional breakdown; its sums may not exceed the summary's.",
    )

    @field_validator("recipient_domains")
    @classmethod
    def _breakdown_within_totals(
        cls, value: list[RecipientCountIn], info: ValidationInfo
    ) -> list[RecipientCountIn]:
        summary = info.data.get("summary")
        if summary is None:
            return value
        ok = sum(r.total_successful_session_count for r in value)
        failed = sum(r.total_failure_session_count for r in value)
        if ok > summary.total_successful_session_count:
            raise ValueError("counts more successful sessions than the summary")
        if failed > summary.total_failure_session_count:
            raise ValueError("counts more failed sessions than the summary")
        return value

    def add_to(self, tally: Tally, day: dt.date) -> None:
        """Add this policy's day to `tally`: sessions the breakdown does not cover are
        counted without a recipient domain."""
        policy = self.policy.to_policy()
        details: dict[FailureDetail, int] = {}
        for d in self.failure_details:
            detail = d.to_detail()
            details[detail] = details.get(detail, 0) + d.failed_session_count
        ok = self.summary.total_successful_session_count
        failed = self.summary.total_failure_session_count
        for r in self.recipient_domains:
            tally.add_counts(
                day,
                policy,
                successes=r.total_successful_session_count,
                failures=r.total_failure_session_count,
                details={},
                recipient_domain=r.recipient_domain,
            )
            ok -= r.total_successful_session_count
            failed -= r.total_failure_session_count
        tally.add_counts(day, policy, successes=ok, failures=failed, details=details)


class TalliesIn(BaseModel):
    """A batch of one UTC day's counters, recorded all or nothing."""

    model_config = WIRE

    batch_id: str | None = Field(
        default=None,
        alias="batch-id",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Sender-chosen id: a batch sent again under the same id is recorded "
        "once (answered with `recorded: false`).",
    )
    day: dt.date = Field(description="The UTC day the sessions happened.")
    policies: list[PolicyTallyIn] = Field(min_length=1)

    def to_tally(self) -> Tally:
        tally = Tally()
        for item in self.policies:
            item.add_to(tally, self.day)
        return tally


def format_tallies(batch_id: str, day: dt.date, tally: Tally) -> dict[str, Any]:
    """The `TalliesIn` JSON of a tally of one day (the collector's batches)."""
    policies = []
    for entry in tally:
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
    return {"batch-id": batch_id, "day": day.isoformat(), "policies": policies}
