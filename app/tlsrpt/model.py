"""The RFC 8460 vocabulary shared by ingest, report building, delivery and inbound.

Wire names (`policy-type`, `failure-details`) appear only in pydantic wire models; here
the names are Python's. A `Policy` is the identity under which sessions are counted
(SPEC §3: type, domain, policy-string list and mx-host list all equal), and a
`FailureDetail` the identity under which failures merge (every field but the count).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class PolicyType(StrEnum):
    """RFC 8460 §4.4 `policy-type`."""

    TLSA = "tlsa"
    STS = "sts"
    NO_POLICY_FOUND = "no-policy-found"


class ResultType(StrEnum):
    """RFC 8460 §4.3 result types; `success` is this service's name for "no failure"."""

    SUCCESS = "success"
    # §4.3.1 negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2 policy failures, DANE
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2 policy failures, MTA-STS
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


FAILURE_TYPES: frozenset[ResultType] = frozenset(ResultType) - {ResultType.SUCCESS}


@dataclass(frozen=True, slots=True)
class Policy:
    """A normalised policy; equal policies share counters (SPEC §3)."""

    policy_type: PolicyType
    policy_domain: str
    policy_string: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()
    # A stable 16-byte identity, the database key of the policy. Computed once: the same
    # policy objects are hashed for every session of a batch.
    key: bytes = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = _digest(
            "policy",
            self.policy_type.value,
            self.policy_domain,
            *("s:" + s for s in self.policy_string),
            *("m:" + m for m in self.mx_host),
        )
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One RFC 8460 §4.4 failure-details entry without its count.

    IP fields hold canonical text (`ipaddress` formatting); absent fields are None,
    never empty strings.
    """

    result_type: ResultType
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    @property
    def key(self) -> bytes:
        """A stable 16-byte identity: details merge when every field but the count is equal."""
        return _digest(
            "detail",
            self.result_type.value,
            *(
                "" if v is None else "=" + v
                for v in (
                    self.sending_mta_ip,
                    self.receiving_mx_hostname,
                    self.receiving_mx_helo,
                    self.receiving_ip,
                    self.additional_information,
                    self.failure_reason_code,
                )
            ),
        )


def _digest(*parts: str) -> bytes:
    # Length-prefixed parts: no two different tuples can produce the same input.
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


@dataclass(slots=True)
class PolicyAggregate:
    """One policy's counters for one UTC day, as a report's `policies` entry needs them."""

    policy: Policy
    success_count: int
    failure_count: int
    # Sessions not flagged `report-delivery`: only these can cause a report (RFC 8460 §3).
    trigger_count: int
    failure_details: list[tuple[FailureDetail, int]]
