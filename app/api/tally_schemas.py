"""Wire models of `POST /v1/tallies`: one UTC day of exact pre-aggregated counters.

The shape is an RFC 8460 §4.4 `policies` list (`policy`, `summary`, `failure-details`
with `failed-session-count`), plus an optional per-recipient-domain breakdown, so a
sender that counted sessions itself (the libtlsrpt collector on an MTA host) can pass on
exactly what it counted, including failure details that are not one per failed session
(RFC 8460 §4.4: their counts are not exclusive). Field types and normalisation are those
of `POST /v1/results` (`ingest_schemas`).
"""

from __future__ import annotations

import datetime as dt

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.api.ingest_schemas import Domain, FailureDetailFields, PolicyIn
from app.tlsrpt.model import FailureDetail, ResultType

_WIRE = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class SummaryIn(BaseModel):
    """RFC 8460 §4.4 `summary`."""

    model_config = _WIRE

    total_successful_session_count: int = Field(alias="total-successful-session-count", ge=0)
    total_failure_session_count: int = Field(alias="total-failure-session-count", ge=0)


class FailureDetailCountIn(FailureDetailFields):
    """RFC 8460 §4.4 `failure-details` entry."""

    model_config = _WIRE

    result_type: ResultType = Field(alias="result-type", description="An RFC 8460 §4.3 type.")
    failed_session_count: int = Field(alias="failed-session-count", ge=1, le=10**12)

    @model_validator(mode="after")
    def _failure_only(self) -> FailureDetailCountIn:
        if self.result_type is ResultType.SUCCESS:
            raise ValueError("result-type of a failure detail can not be success")
        return self

    def to_detail(self) -> FailureDetail:
        return self.failure_detail(self.result_type)


class RecipientCountIn(BaseModel):
    """Sessions of the policy by RCPT TO domain (for breakdowns; not in reports)."""

    model_config = _WIRE

    recipient_domain: Domain = Field(alias="recipient-domain")
    total_successful_session_count: int = Field(alias="total-successful-session-count", ge=0)
    total_failure_session_count: int = Field(alias="total-failure-session-count", ge=0)


class PolicyTallyIn(BaseModel):
    """One policy's counters for the day."""

    model_config = _WIRE

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


class TalliesIn(BaseModel):
    """A batch of one UTC day's counters, recorded all or nothing."""

    model_config = _WIRE

    batch_id: str | None = Field(
        default=None,
        alias="batch-id",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Sender-chosen id: a batch sent again under the same id is recorded "
        "once (answered with `recorded: false`).",
    )
    day: dt.date = Field(description="The UTC day the sessions happened.")
    policies: list[PolicyTallyIn] = Field(min_length=1)


class TalliesAccepted(BaseModel):
    policies: int = Field(description="Policy entries in the batch.")
    sessions: int = Field(description="Sessions counted (successful plus failed).")
    recorded: bool = Field(
        description="False when a batch with this batch-id was recorded before; nothing "
        "was added this time."
    )
