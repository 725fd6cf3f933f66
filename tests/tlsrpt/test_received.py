"""The received-report model against real reports and the deviations senders make."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.tlsrpt.model import PolicyType
from app.tlsrpt.received import InvalidReportError, Limits, ReceivedReport, ReportTooLargeError
from app.tlsrpt.received_json import MAX_DEPTH, parse_report

SAMPLES = Path(__file__).parent.parent / "samples"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def minimal(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "organization-name": "Org",
        "date-range": {
            "start-datetime": "2024-05-01T00:00:00Z",
            "end-datetime": "2024-05-01T23:59:59Z",
        },
        "contact-info": "tlsrpt@org.example",
        "report-id": "r1",
        "policies": [
            {
                "policy": {"policy-type": "sts", "policy-domain": "example.com"},
                "summary": {
                    "total-successful-session-count": 1,
                    "total-failure-session-count": 0,
                },
            }
        ],
    }
    report.update(changes)
    return report


def parse(doc: Any, limits: Limits | None = None) -> ReceivedReport:
    return parse_report(orjson.dumps(doc), limits)


def problems(doc: Any) -> list[str]:
    with pytest.raises(InvalidReportError) as caught:
        parse(doc)
    return [str(p) for p in caught.value.problems]


def test_rfc_appendix_b_as_printed_with_mx_host_string() -> None:
    report = parse_report(sample("json/rfc8460_appendix-b_verbatim.json"))
    assert report.organization_name == "Company-X"
    assert report.report_id == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    assert report.start_at == datetime(2016, 4, 1, tzinfo=UTC)
    assert report.end_at == datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC)
    (policy,) = report.policies
    assert policy.policy_type is PolicyType.STS
    assert policy.policy_domain == "company-y.example"
    assert policy.mx_host == ("*.mail.company-y.example",)
    assert policy.policy_string[1] == "mode: testing"
    assert (policy.successful_sessions, policy.failed_sessions) == (5326, 303)
    assert [(f.result_type, f.failed_session_count) for f in policy.failures] == [
        ("certificate-expired", 100),
        ("starttls-not-supported", 200),
        ("validation-failure", 3),
    ]
    # IPs are written canonically; absent fields are None.
    assert policy.failures[0].sending_mta_ip == "2001:db8:abcd:12::1"
    assert policy.failures[0].receiving_ip is None
    assert policy.failures[2].failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
    assert report.has_failures


def test_google_sts_successes_only() -> None:
    report = parse_report(sample("json/google_foo-bar-io_2025-05-22.json"))
    (policy,) = report.policies
    assert policy.mx_host == ("*.foo-bar.io",)
    assert (policy.successful_sessions, policy.failed_sessions, policy.failures) == (1, 0, ())
    assert not report.has_failures
    assert report.day.isoformat() == "2025-05-22"


def test_microsoft_tlsa_policy_string_given_as_one_json_string() -> None:
    report = parse_report(sample("json/microsoft_sts-and-tlsa_2025-05-23.json"))
    sts, tlsa = report.policies
    assert sts.policy_type is PolicyType.STS and sts.mx_host == ()
    assert tlsa.policy_type is PolicyType.TLSA
    assert tlsa.policy_string == (
        "3 1 1 6007EEE553E85D8DF007A845D19EC343283D4E416E9A33F9EF3040C8B7C285BC",
        "3 1 1 837C773D54C2E2BD71871A3FC352BE8214D5646CBAE5E3091401A7274717998B",
    )
    assert tlsa.successful_sessions == 2


def test_mailru_end_at_next_midnight_and_detail_counts_beyond_total() -> None:
    report = parse_report(sample("json/mailru_sts-policy-fetch-error_2024-02-22.json"))
    assert report.end_at == datetime(2024, 2, 23, tzinfo=UTC)
    assert report.day.isoformat() == "2024-02-22"
    (policy,) = report.policies
    assert policy.failed_sessions == 1
    assert sum(f.failed_session_count for f in policy.failures) == 2
    assert policy.mx_host == () and policy.policy_string == ()


def test_blank_optional_strings_are_absent() -> None:
    report = parse_report(sample("quirks/empty-string-optional-fields_sts-policy-fetch-error.json"))
    (failure,) = report.policies[0].failures
    assert failure.sending_mta_ip is None
    assert failure.receiving_ip is None
    assert failure.receiving_mx_hostname is None
    assert failure.additional_information is None
    assert failure.failure_reason_code == "no-policy-served"


def test_invalid_policy_type_and_missing_domain_are_named() -> None:
    with pytest.raises(InvalidReportError) as caught:
        parse_report(sample("quirks/invalid-policy-type_missing-fields.json"))
    found = [str(p) for p in caught.value.problems]
    assert "policies[0].policy.policy-domain: missing" in found
    assert "policies[0].summary.total-failure-session-count: missing" in found
    assert (
        "policies[1].policy.policy-type: unknown policy-type 'invalid-policy-type' "
        "(expected sts, tlsa or no-policy-found)"
    ) in found
    assert str(caught.value) == found[0]


def test_date_times_without_zone_read_as_utc_and_offsets_converted() -> None:
    report = parse(
        minimal(
            **{
                "date-range": {
                    "start-datetime": "2024-05-01T00:00:00",
                    "end-datetime": "2024-05-02T01:59:59+02:00",
                }
            }
        )
    )
    assert report.start_at == datetime(2024, 5, 1, tzinfo=UTC)
    assert report.end_at == datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)


def test_unknown_result_type_and_extra_keys_kept_verbatim() -> None:
    doc = minimal(**{"x-top": {"a": [1, 2]}})
    doc["date-range"]["x-zone"] = "UTC"
    entry = doc["policies"][0]
    entry["x-entry"] = 1
    entry["policy"]["x-policy"] = "p"
    entry["summary"]["x-summary"] = True
    entry["failure-details"] = [
        {"result-type": "certificate-revoked", "failed-session-count": 4, "x-detail": None}
    ]
    report = parse(doc)
    assert report.extra == {"x-top": {"a": [1, 2]}, "date-range.x-zone": "UTC"}
    policy = report.policies[0]
    assert policy.extra == {"x-entry": 1, "policy.x-policy": "p", "summary.x-summary": True}
    (failure,) = policy.failures
    assert failure.result_type == "certificate-revoked" and not failure.known_type
    assert failure.extra == {"x-detail": None}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"policies": []}, "policies: must be a non-empty array"),
        ({"policies": None}, "policies: missing"),
        ({"report-id": "  "}, "report-id: must not be blank"),
        ({"organization-name": 5}, "organization-name: must be a string"),
        ({"date-range": "today"}, "date-range: must be an object"),
        (
            {"date-range": {"start-datetime": "yesterday", "end-datetime": "2024-05-01T00:00:00Z"}},
            "date-range.start-datetime: 'yesterday' is not an RFC 3339 date-time",
        ),
        (
            {
                "date-range": {
                    "start-datetime": "2024-05-02T00:00:00Z",
                    "end-datetime": "2024-05-01T00:00:00Z",
                }
            },
            "date-range: end-datetime is before start-datetime",
        ),
    ],
)
def test_not_a_report(change: dict[str, Any], expected: str) -> None:
    assert problems(minimal(**change)) == [expected]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("total-successful-session-count", -1, "must be between 0 and 2^63-1"),
        ("total-successful-session-count", 1.5, "must be an integer"),
        ("total-successful-session-count", True, "must be an integer"),
        ("total-failure-session-count", "3", "must be an integer"),
    ],
)
def test_counts_are_non_negative_integers(field: str, value: Any, expected: str) -> None:
    doc = minimal()
    doc["policies"][0]["summary"][field] = value
    assert problems(doc) == [f"policies[0].summary.{field}: {expected}"]


def test_bad_ip_and_domain_named_with_path() -> None:
    doc = minimal()
    doc["policies"][0]["policy"]["policy-domain"] = "bad domain!"
    doc["policies"][0]["failure-details"] = [
        {"result-type": "certificate-expired", "failed-session-count": 1, "receiving-ip": "1.2.3"}
    ]
    doc["policies"][0]["failure-details"].append(
        {
            "result-type": "certificate-expired",
            "failed-session-count": 1,
            "sending-mta-ip": "fe80::1%eth0",
        }
    )
    found = problems(doc)
    assert found[0].startswith("policies[0].policy.policy-domain: invalid label")
    # PostgreSQL's inet can not hold a zone index: refused here, not a 500 later.
    assert found[2] == (
        "policies[0].failure-details[1].sending-mta-ip: 'fe80::1%eth0' is not an IP address"
    )
    assert found[1] == "policies[0].failure-details[0].receiving-ip: '1.2.3' is not an IP address"


def test_policy_domain_normalised_to_a_label() -> None:
    doc = minimal()
    doc["policies"][0]["policy"]["policy-domain"] = "Bücher.Example."
    doc["policies"][0]["policy"]["mx-host"] = ["MX1.Bücher.example.", "", "*.Weird_Host!"]
    policy = parse(doc).policies[0]
    assert policy.policy_domain == "xn--bcher-kva.example"
    assert policy.mx_host == ("mx1.xn--bcher-kva.example", "*.weird_host!")


def test_problems_are_capped_and_escaped() -> None:
    summary = {"total-successful-session-count": 1, "total-failure-session-count": 0}
    doc = minimal(policies=[{"policy": {"policy-type": "x\n\x1b[31m"}, "summary": summary}] * 50)
    found = problems(doc)
    assert len(found) == 20
    assert "\n" not in "".join(found) and "\x1b" not in "".join(found)
    assert found[0].endswith(
        "unknown policy-type 'x\\u000a\\u001b[31m' (expected sts, tlsa or no-policy-found)"
    )


def test_not_json_and_not_an_object() -> None:
    assert problems(b"\xff\xfe".decode("latin-1"))[0] == "a report is a JSON object"
    with pytest.raises(InvalidReportError, match="not valid JSON"):
        parse_report(b'{"policies": [')


def test_nesting_and_nul_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidReportError, match="nested deeper"):
        parse(minimal(x=deep))
    with pytest.raises(InvalidReportError, match="x: nested deeper than 8 levels"):
        parse(minimal(x=deep))
    with pytest.raises(InvalidReportError, match="NUL"):
        parse(minimal(**{"report-id": "a\x00b"}))
    with pytest.raises(InvalidReportError, match="NUL"):
        parse(minimal(**{"x-\x00": 1}))
    # A backslash followed by `u0000` is text, not NUL.
    assert parse(minimal(**{"report-id": "a\\u0000b"})).report_id == "a\\u0000b"


def test_item_caps() -> None:
    doc = minimal()
    doc["policies"] = doc["policies"] * 3
    with pytest.raises(ReportTooLargeError, match="3 policies"):
        parse(doc, Limits(max_policies=2, max_failure_details=10))
    doc["policies"][0]["failure-details"] = [
        {"result-type": "certificate-expired", "failed-session-count": 1}
    ] * 11
    with pytest.raises(ReportTooLargeError, match="more than 10 failure details"):
        parse(doc, Limits(max_policies=5, max_failure_details=10))
    # Brackets are counted before decoding: a flood of empty objects is never built.
    flood = b'{"x": [' + b"{}," * 100_000 + b"{}]}"
    with pytest.raises(ReportTooLargeError, match="JSON objects and arrays"):
        parse_report(flood, Limits(max_policies=10, max_failure_details=10))
