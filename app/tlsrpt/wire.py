"""The one wire model of RFC 8460 §4.4 JSON (`policy`, `summary`, `failure-details`):
names, limits, pydantic models and formatting, used by the report builder, the ingest
bodies, the collector and the readers of received reports and datagrams. Validation
normalises: A-label domains, canonical IPs, sorted TLSA strings, blank means absent."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from app.tlsrpt.model import FailureDetail, Policy, PolicyAggregate, PolicyType, ResultType
from app.tlsrpt.names import MAX_DOMAIN_CHARS, normalise_domain, normalise_ip, normalise_mx_pattern

# RFC 8460 §4.4 failure-details fields other than `result-type` and the count, with the
# `FailureDetail` attribute of each, in the order the RFC lists them.
DETAIL_FIELDS: tuple[tuple[str, str], ...] = (
    ("sending-mta-ip", "sending_mta_ip"),
    ("receiving-mx-hostname", "receiving_mx_hostname"),
    ("receiving-mx-helo", "receiving_mx_helo"),
    ("receiving-ip", "receiving_ip"),
    ("additional-information", "additional_information"),
    ("failure-reason-code", "failure_reason_code"),
)
DETAIL_IP_FIELDS = frozenset({"sending-mta-ip", "receiving-ip"})

# What this service stores of one value: free text and policy lines up to MAX_TEXT
# characters, lists (policy-string, mx-host) up to MAX_LIST entries.
MAX_TEXT = 1024
MAX_LIST = 256
MAX_DOMAIN = 255

# Checked by pydantic-core's regex engine, not a Python call per string. Control
# characters could forge mail headers or log lines downstream.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


# The form of a domain the schema states: LDH labels of 1-63 characters (`_` too, as in
# `_smtp._tls`), an optional trailing dot. `normalise_domain` enforces it; it also maps
# U-labels to A-labels (SPEC §3), which the description says.
_NAME = (
    r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
DOMAIN_PATTERN = "^" + _NAME
# A domain name and a trailing dot.
MAX_DOMAIN_NAME = MAX_DOMAIN_CHARS + 1
DOMAIN_SCHEMA: dict[str, Any] = {"pattern": DOMAIN_PATTERN}
# Optional fields take a blank string as absent.
_BLANK: dict[str, Any] = {"type": "string", "pattern": r"^\s*$", "maxLength": MAX_DOMAIN_NAME}
_OPT_DOMAIN_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_DOMAIN_NAME, **DOMAIN_SCHEMA},
        _BLANK,
        {"type": "null"},
    ]
}
Domain = Annotated[
    str,
    Field(min_length=1, max_length=MAX_DOMAIN_NAME, json_schema_extra=DOMAIN_SCHEMA),
    AfterValidator(normalise_domain),
]
OptDomain = Annotated[
    Domain | None, BeforeValidator(_blank_to_none), WithJsonSchema(_OPT_DOMAIN_SCHEMA)
]
OptIp = Annotated[
    Annotated[str, Field(max_length=64), AfterValidator(normalise_ip)] | None,
    BeforeValidator(_blank_to_none),
]
OptText = Annotated[
    Annotated[str, Field(max_length=MAX_TEXT, pattern=PRINTABLE)] | None,
    BeforeValidator(_blank_to_none),
]
PolicyLine = Annotated[str, Field(max_length=MAX_TEXT, pattern=PRINTABLE)]
MxPattern = Annotated[
    str,
    Field(min_length=1, max_length=MAX_DOMAIN, json_schema_extra={"pattern": r"^(\*\.)?" + _NAME}),
    AfterValidator(normalise_mx_pattern),
]

WIRE = ConfigDict(extra="forbid", populate_by_name=False, frozen=True)


class PolicyIn(BaseModel):
    """RFC 8460 §4.4 `policy`."""

    model_config = WIRE

    policy_type: PolicyType = Field(alias="policy-type")
    policy_domain: Domain = Field(
        alias="policy-domain",
        description="Recipient domain for `sts` and `no-policy-found`; MX host (TLSA base "
        "domain) for `tlsa` (RFC 8460 §1.1).",
    )
    policy_string: list[PolicyLine] = Field(
        default_factory=list,
        alias="policy-string",
        max_length=MAX_LIST,
        description="MTA-STS policy lines or TLSA records; TLSA records are sorted.",
    )
    mx_host: list[MxPattern] = Field(
        default_factory=list,
        alias="mx-host",
        max_length=MAX_LIST,
        description="MTA-STS `mx` patterns (`sts` only).",
    )

    @model_validator(mode="after")
    def _check_type(self) -> PolicyIn:
        if self.mx_host and self.policy_type is not PolicyType.STS:
            raise ValueError("mx-host is only allowed with policy-type sts")
        return self

    def to_policy(self) -> Policy:
        # Keyed by the type's value (a str): an enum member hashes in Python.
        return _policy(
            self.policy_type._value_,
            self.policy_domain,
            tuple(self.policy_string),
            tuple(self.mx_host),
        )


@functools.lru_cache(maxsize=65536)
def _policy(
    type_value: str, domain: str, strings: tuple[str, ...], mx_host: tuple[str, ...]
) -> Policy:
    """MTAs send the same few policies all day: one `Policy` (and its digest) for each."""
    policy_type = PolicyType(type_value)
    if policy_type is PolicyType.TLSA:
        # SPEC §3: TLSA record order carries no meaning; sorted, equal sets merge.
        strings = tuple(sorted(strings))
    return Policy(policy_type, domain, strings, mx_host)


class FailureDetailFields(BaseModel):
    """The RFC 8460 §4.4 failure-detail fields (all but `result-type` and the count)."""

    model_config = WIRE

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


class SummaryIn(BaseModel):
    """RFC 8460 §4.4 `summary`."""

    model_config = WIRE

    total_successful_session_count: int = Field(alias="total-successful-session-count", ge=0)
    total_failure_session_count: int = Field(alias="total-failure-session-count", ge=0)


class FailureDetailCountIn(FailureDetailFields):
    """RFC 8460 §4.4 `failure-details` entry."""

    model_config = WIRE

    result_type: ResultType = Field(alias="result-type", description="An RFC 8460 §4.3 type.")
    failed_session_count: int = Field(alias="failed-session-count", ge=1, le=10**12)

    @model_validator(mode="after")
    def _failure_only(self) -> FailureDetailCountIn:
        if self.result_type is ResultType.SUCCESS:
            raise ValueError("result-type of a failure detail can not be success")
        return self

    def to_detail(self) -> FailureDetail:
        return self.failure_detail(self.result_type)


def format_policy(agg: PolicyAggregate) -> dict[str, Any]:
    """One `policies` entry (RFC 8460 §4.4): key order as the RFC's, absent optional
    fields left out (never empty strings), counts as integers."""
    p = agg.policy
    policy: dict[str, Any] = {
        "policy-type": p.policy_type.value,
        "policy-string": list(p.policy_string),
        "policy-domain": p.policy_domain,
    }
    if p.policy_type is PolicyType.STS or p.mx_host:
        # Erratum 6241: `mx-host` is an array of the policy's mx patterns.
        policy["mx-host"] = list(p.mx_host)
    entry: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": agg.success_count,
            "total-failure-session-count": agg.failure_count,
        },
    }
    if agg.failure_details:
        entry["failure-details"] = [
            format_failure_detail(d, n)
            for d, n in sorted(agg.failure_details, key=lambda item: _detail_order(item[0]))
        ]
    return entry


def format_failure_detail(detail: FailureDetail, count: int) -> dict[str, Any]:
    """One `failure-details` entry (RFC 8460 §4.4, result types §4.3)."""
    out: dict[str, Any] = {"result-type": detail.result_type.value}
    for key, attr in DETAIL_FIELDS:
        value = getattr(detail, attr)
        if value is not None:
            out[key] = value
        if attr == "receiving_ip":
            # The RFC's example puts the count after the addresses, before the free text.
            out["failed-session-count"] = count
    return out


def _detail_order(d: FailureDetail) -> tuple[str, ...]:
    # Deterministic: reports built twice from the same counters are byte-identical.
    return tuple(
        v or ""
        for v in (
            d.result_type.value,
            d.receiving_mx_hostname,
            d.receiving_ip,
            d.sending_mta_ip,
            d.receiving_mx_helo,
            d.failure_reason_code,
            d.additional_information,
        )
    )
