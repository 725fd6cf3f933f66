"""Parse the datagrams that libtlsrpt (Postfix 3.10+) sends, into RFC 8460 counts.

One datagram is one delivery attempt: UTF-8 JSON with the recipient domain `d` and one or
more policy objects, each finished as success or failure and carrying the failure details
the MTA added. Each policy object counts as one session for its policy, `f` as its
failure, and each failure-detail object as one failed session of that detail (the
receivers' counting rules in shared/LIBTLSRPT.md). Names and addresses are normalised as
everywhere else (`names`), so the counts merge with those of the ingest API. Anything that
must be valid and is not (types, result codes, IP addresses, names) rejects the whole
datagram with a `DatagramError` whose `kind` a caller can count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from app.tlsrpt.names import normalise_domain, normalise_ip, normalise_mx_pattern
from app.tlsrpt.wire import MAX_LIST, MAX_TEXT

# libtlsrpt's `tlsrpt_policy_type_t`.
POLICY_TYPES: dict[int, PolicyType] = {
    1: PolicyType.TLSA,
    2: PolicyType.STS,
    9: PolicyType.NO_POLICY_FOUND,
}

# libtlsrpt's `tlsrpt_failure_t`: the RFC 8460 §4.3 result types by number.
RESULT_CODES: dict[int, ResultType] = {
    201: ResultType.STARTTLS_NOT_SUPPORTED,
    202: ResultType.CERTIFICATE_HOST_MISMATCH,
    203: ResultType.CERTIFICATE_NOT_TRUSTED,
    204: ResultType.CERTIFICATE_EXPIRED,
    205: ResultType.VALIDATION_FAILURE,
    301: ResultType.STS_POLICY_FETCH_ERROR,
    302: ResultType.STS_POLICY_INVALID,
    303: ResultType.STS_WEBPKI_INVALID,
    304: ResultType.TLSA_INVALID,
    305: ResultType.DNSSEC_INVALID,
    306: ResultType.DANE_REQUIRED,
}

# The one datagram protocol version this parser knows. Early libtlsrpt releases sent no
# `dpv` at all, in the same format; those are read as version 1.
SUPPORTED_VERSION = "1"

# The limits of the wire model (`app.tlsrpt.wire`), so whatever this parser accepts is
# accepted by every sink: longer free text is cut, longer policies refused.
_CONTROL = {i: " " for i in (*range(0x20), 0x7F)}

# Kinds of invalid datagrams, the label of the `invalid` counter.
BAD_JSON = "bad_json"
UNSUPPORTED_VERSION = "unsupported_version"
INVALID_FIELD = "invalid_field"
UNKNOWN_POLICY_TYPE = "unknown_policy_type"
UNKNOWN_CODE = "unknown_code"
INVALID_IP = "invalid_ip"
INVALID_DOMAIN = "invalid_domain"
INVALID_KINDS = (
    BAD_JSON,
    UNSUPPORTED_VERSION,
    INVALID_FIELD,
    UNKNOWN_POLICY_TYPE,
    UNKNOWN_CODE,
    INVALID_IP,
    INVALID_DOMAIN,
)


class DatagramError(ValueError):
    """A datagram that can not be counted; `kind` is one of INVALID_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy object of a datagram: one session for `policy`."""

    policy: Policy
    failed: bool
    # One entry per failure-detail object, in datagram order (repeats allowed).
    details: tuple[FailureDetail, ...] = ()


@dataclass(frozen=True, slots=True)
class Datagram:
    """One delivery attempt as libtlsrpt reported it."""

    recipient_domain: str
    results: tuple[PolicyResult, ...]


def parse_datagram(data: bytes) -> Datagram:
    """Parse one datagram; raise DatagramError naming the kind and the offending field."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DatagramError(BAD_JSON, f"not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DatagramError(BAD_JSON, "not a JSON object")
    version = doc.get("dpv", SUPPORTED_VERSION)
    if version != SUPPORTED_VERSION:
        raise DatagramError(UNSUPPORTED_VERSION, f"dpv: unsupported version {version!r}")
    recipient = _domain(_string(doc, "d", "d"), "d")
    _optional_string(doc, "pr", "pr")
    policies = doc.get("policies")
    if not isinstance(policies, list) or not policies:
        raise DatagramError(INVALID_FIELD, "policies: must be a non-empty array")
    results = tuple(
        _policy_result(item, recipient, f"policies[{i}]") for i, item in enumerate(policies)
    )
    return Datagram(recipient_domain=recipient, results=results)


def _policy_result(item: Any, recipient: str, where: str) -> PolicyResult:
    if not isinstance(item, dict):
        raise DatagramError(INVALID_FIELD, f"{where}: must be an object")
    code = _integer(item, "policy-type", where)
    policy_type = POLICY_TYPES.get(code)
    if policy_type is None:
        raise DatagramError(UNKNOWN_POLICY_TYPE, f"{where}.policy-type: unknown type {code}")
    domain_text = _optional_string(item, "policy-domain", where)
    # LIBTLSRPT.md: a policy without policy-domain belongs to the recipient domain.
    domain = _domain(domain_text, f"{where}.policy-domain") if domain_text else recipient
    strings = [_text(s) for s in _string_list(item, "policy-string", where)]
    if any(len(s) > MAX_TEXT for s in strings):
        raise DatagramError(
            INVALID_FIELD, f"{where}.policy-string: an entry is longer than {MAX_TEXT}"
        )
    if policy_type is PolicyType.TLSA:
        # SPEC §3: TLSA records are a set; sorted, equal sets are one policy.
        strings = sorted(strings)
    mx_hosts = tuple(
        _mx_pattern(p, f"{where}.mx-host[{i}]")
        for i, p in enumerate(_string_list(item, "mx-host", where))
    )
    if policy_type is not PolicyType.STS:
        # RFC 8460 §4.4: mx-host describes an MTA-STS policy. libtlsrpt lets any type
        # carry patterns; the session still counts, the meaningless patterns are dropped
        # so the policy is the same one the ingest API would record.
        mx_hosts = ()
    details_raw = item.get("failure-details", [])
    if not isinstance(details_raw, list):
        raise DatagramError(INVALID_FIELD, f"{where}.failure-details: must be an array")
    details = tuple(
        _failure_detail(d, f"{where}.failure-details[{i}]") for i, d in enumerate(details_raw)
    )
    if "t" in item:
        _integer(item, "t", where)
    final = _integer(item, "f", where)
    if final not in (0, 1):
        raise DatagramError(INVALID_FIELD, f"{where}.f: must be 0 or 1, not {final}")
    policy = Policy(
        policy_type=policy_type,
        policy_domain=domain,
        policy_string=tuple(strings),
        mx_host=mx_hosts,
    )
    return PolicyResult(policy=policy, failed=final == 1, details=details)


def _failure_detail(item: Any, where: str) -> FailureDetail:
    if not isinstance(item, dict):
        raise DatagramError(INVALID_FIELD, f"{where}: must be an object")
    code = _integer(item, "c", where)
    result_type = RESULT_CODES.get(code)
    if result_type is None:
        raise DatagramError(UNKNOWN_CODE, f"{where}.c: unknown result code {code}")
    hostname = _optional_string(item, "n", where)
    return FailureDetail(
        result_type=result_type,
        sending_mta_ip=_ip(_optional_string(item, "s", where), f"{where}.s"),
        receiving_mx_hostname=_domain(hostname, f"{where}.n") if hostname else None,
        receiving_mx_helo=_optional_text(item, "h", where),
        receiving_ip=_ip(_optional_string(item, "r", where), f"{where}.r"),
        additional_information=_optional_text(item, "a", where),
        failure_reason_code=_optional_text(item, "f", where),
    )


def _string(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise DatagramError(INVALID_FIELD, f"{where}: must be a string")
    return value


def _optional_string(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None or isinstance(value, str):
        return value
    raise DatagramError(INVALID_FIELD, f"{where}.{key}: must be a string")


def _optional_text(doc: dict[str, Any], key: str, where: str) -> str | None:
    value = _optional_string(doc, key, where)
    text = _text(value or "")
    # Blank reads as absent, as in the ingest API.
    return text[:MAX_TEXT] if text.strip() else None


def _text(value: str) -> str:
    # Free text from the MTA: control characters (which the ingest API refuses) become
    # spaces rather than costing the session its count.
    return value.translate(_CONTROL)


def _integer(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    # bool is an int in Python; JSON true is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatagramError(INVALID_FIELD, f"{where}.{key}: must be an integer")
    return value


def _string_list(doc: dict[str, Any], key: str, where: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatagramError(INVALID_FIELD, f"{where}.{key}: must be an array of strings")
    if len(value) > MAX_LIST:
        raise DatagramError(INVALID_FIELD, f"{where}.{key}: more than {MAX_LIST} entries")
    return value


def _domain(value: str, where: str) -> str:
    try:
        return normalise_domain(value)
    except ValueError as exc:
        raise DatagramError(INVALID_DOMAIN, f"{where}: {exc}") from None


def _mx_pattern(value: str, where: str) -> str:
    try:
        return normalise_mx_pattern(value)
    except ValueError as exc:
        raise DatagramError(INVALID_DOMAIN, f"{where}: {exc}") from None


def _ip(value: str | None, where: str) -> str | None:
    if not value:
        return None
    try:
        return normalise_ip(value)
    except ValueError as exc:
        raise DatagramError(INVALID_IP, f"{where}: {exc}") from None
