"""RFC 8460 §4.4 JSON for one policy's day: `policy`, `summary`, `failure-details`.

Used by the day-results API and by report building, so what an operator reads before a
report is built is what the report will say. Key order follows the RFC; absent optional
fields are left out, never written as empty strings; counts are integers.
"""

from __future__ import annotations

from typing import Any

from app.tlsrpt.model import FailureDetail, PolicyAggregate, PolicyType


def format_policy(agg: PolicyAggregate) -> dict[str, Any]:
    """One `policies` entry (RFC 8460 §4.4)."""
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
    for key, value in (
        ("sending-mta-ip", detail.sending_mta_ip),
        ("receiving-mx-hostname", detail.receiving_mx_hostname),
        ("receiving-mx-helo", detail.receiving_mx_helo),
        ("receiving-ip", detail.receiving_ip),
    ):
        if value is not None:
            out[key] = value
    out["failed-session-count"] = count
    if detail.additional_information is not None:
        out["additional-information"] = detail.additional_information
    if detail.failure_reason_code is not None:
        out["failure-reason-code"] = detail.failure_reason_code
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
