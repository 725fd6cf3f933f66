"""Wire models of `POST /v1/results`, with RFC 8460 field names (SPEC §3).

Normalisation happens here, at the edge: domains to lower-case A-labels, IPs canonical,
TLSA policy strings sorted. Blank optional strings read as absent. Every problem is a
pydantic error whose location names the item index and the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.names import normalise_domain, normalise_ip, normalise_mx_pattern


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


# Checked by pydantic-core's regex engine, not a Python call per string. Control
# characters could forge mail headers or log lines downstream.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


Domain = Annotated[str, Field(max_length=255), AfterValidator(normalise_domain)]
OptDomain = Annotated[Domain | None, BeforeValidator(_blank_to_none)]
OptIp = Annotated[
    Annotated[str, Field(max_length=64), AfterValidator(normalise_ip)] | None,
    BeforeValidator(_blank_to_none),
]
OptText = Annotated[
    Annotated[str, Field(max_length=1024, pattern=PRINTABLE)] | None,
    BeforeValidator(_blank_to_none),
]
PolicyLine = Annotated[str, Field(max_length=1024, pattern=PRINTABLE)]
MxPattern = Annotated[str, Field(max_length=255), AfterValidator(normalise_mx_pattern)]

_WIRE = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class PolicyIn(BaseModel):
    """RFC 8460 §4.4 `policy`."""

    model_config = _WIRE

    policy_type: PolicyType = Field(alias="policy-type")
    policy_domain: Domain = Field(
        alias="policy-domain",
        description="Recipient domain for `sts` and `no-policy-found`; MX host (TLSA base "
        "domain) for `tlsa` (RFC 8460 §1.1).",
    )
    policy_string: list[PolicyLine] = Field(
        default_factory=list,
        alias="policy-string",
        max_length=256,
        description="MTA-STS policy lines or TLSA records; TLSA records are sorted.",
    )
    mx_host: list[MxPattern] = Field(
        default_factory=list,
        alias="mx-host",
        max_length=256,
        description="MTA-STS `mx` patterns (`sts` only).",
    )

    @model_validator(mode="after")
    def _check_type(self) -> PolicyIn:
        if self.mx_host and self.policy_type is not PolicyType.STS:
            raise ValueError("mx-host is only allowed with policy-type sts")
        return self

    def to_policy(self) -> Policy:
        strings = tuple(self.policy_string)
        if self.policy_type is PolicyType.TLSA:
            # SPEC §3: TLSA record order carries no meaning; sorted, equal sets merge.
            strings = tuple(sorted(strings))
        return Policy(self.policy_type, self.policy_domain, strings, tuple(self.mx_host))


_DETAIL_FIELDS = frozenset(
    (
        "sending_mta_ip",
        "receiving_mx_hostname",
        "receiving_mx_helo",
        "receiving_ip",
        "additional_information",
        "failure_reason_code",
    )
)


class FailureDetailFields(BaseModel):
    """The RFC 8460 §4.4 failure-detail fields, shared by results and tallies."""

    model_config = _WIRE

    sending_mta_ip: OptIp = Field(default=None, alias="sending-mta-ip")
    receiving_mx_hostname: OptDomain = Field(default=None, alias="receiving-mx-hostname")
    receiving_mx_helo: OptText = Field(default=None, alias="receiving-mx-helo")
    receiving_ip: OptIp = Field(default=None, alias="receiving-ip")
    additional_information: OptText = Field(default=None, alias="additional-information")
    failure_reason_code: OptText = Field(default=None, alias="failure-reason-code")

    def failure_detail(self, result_type: ResultType) -> FailureDetail:
        return FailureDetail(
            result_type,
            self.sending_mta_ip,
            self.receiving_mx_hostname,
            self.receiving_mx_helo,
            self.receiving_ip,
            self.additional_information,
            self.failure_reason_code,
        )


class ResultIn(FailureDetailFields):
    """The TLS outcome of `count` identical SMTP sessions for one policy."""

    model_config = _WIRE

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
    count: int = Field(default=1, ge=1, le=1_000_000_000)
    report_delivery: bool = Field(
        default=False,
        alias="report-delivery",
        description="The session delivered a TLS report: counted, but never alone causes "
        "a report (RFC 8460 §3).",
    )

    def detail_fields_on_success(self) -> str | None:
        """The failure-detail fields a success result carries (an error), if any.

        Checked by the caller's loop rather than a model validator: a validator call per
        item is a measurable share of ingest CPU."""
        if self.result_type is ResultType.SUCCESS and not _DETAIL_FIELDS.isdisjoint(
            self.model_fields_set
        ):
            present = [f for f in _DETAIL_FIELDS if getattr(self, f) is not None]
            if present:
                return ", ".join(f.replace("_", "-") for f in present)
        return None

    def to_detail(self) -> FailureDetail | None:
        if self.result_type is ResultType.SUCCESS:
            return None
        return self.failure_detail(self.result_type)


class ResultsIn(BaseModel):
    results: list[ResultIn] = Field(min_length=1)


class ResultsAccepted(BaseModel):
    accepted: int = Field(description="Results stored (items of the batch).")
    sessions: int = Field(description="Sessions counted (the sum of `count`).")
