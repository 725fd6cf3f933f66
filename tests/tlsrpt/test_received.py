"""The received-report model against real reports and the deviations senders make."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.tlsrpt.model import PolicyType
from app.tlsrpt.received import InvalidReportError, Limits, ReceivedReport, ReportTooLargeError
from app.tlsrpt.received_json import MAX_DEPTH, MAX_WARNINGS, _Reader, parse_report

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


def warnings(report: ReceivedReport) -> list[str]:
    return [str(w) for w in report.warnings]


def test_invalid_policy_type_and_missing_domain_stored_flagged() -> None:
    # Lenient receiving (issue 18): the report is read, the policies it can not count
    # are named, and nothing else is lost.
    report = parse_report(sample("quirks/invalid-policy-type_missing-fields.json"))
    assert (report.organization_name, report.report_id) == (
        "Google Inc.",
        "2019-04-14T00:00:00Z_example.org",
    )
    assert report.policies == ()
    left_out = "this policy is not counted (the stored JSON keeps it)"
    assert warnings(report) == [
        f"policies[0].policy.policy-domain: missing; {left_out}",
        "policies[0].summary.total-failure-session-count: missing; read as 0",
        "policies[1].policy.policy-type: unknown policy-type 'invalid-policy-type' "
        f"(expected sts, tlsa or no-policy-found); {left_out}",
        f"policies[1].policy.policy-domain: missing; {left_out}",
        "policies[1].summary.total-failure-session-count: missing; read as 0",
    ]


def test_null_contact_info_and_bad_sending_ip_stored_flagged() -> None:
    report = parse_report(sample("quirks/null-contact-info.json"))
    assert report.contact_info is None
    assert warnings(report) == ["contact-info: missing or blank; stored as absent"]
    assert report.policies[0].successful_sessions == 12
    report = parse_report(sample("quirks/sending-mta-ip-not-an-ip.json"))
    (first, second) = report.policies[0].failures
    assert first.sending_mta_ip is None and first.receiving_ip == "192.0.2.25"
    assert second.sending_mta_ip == "198.51.100.7"
    assert warnings(report) == [
        "policies[0].failure-details[0].sending-mta-ip: 'mta-out-3.sender.example' "
        "is not an IP address; stored as absent"
    ]
    assert report.policies[0].failed_sessions == 3


def test_well_formed_samples_have_no_warnings() -> None:
    for name in (
        "json/rfc8460_appendix-b_verbatim.json",
        "json/google_foo-bar-io_2025-05-22.json",
        "json/microsoft_sts-and-tlsa_2025-05-23.json",
        "json/mailru_sts-policy-fetch-error_2024-02-22.json",
        "quirks/empty-string-optional-fields_sts-policy-fetch-error.json",
    ):
        assert parse_report(sample(name)).warnings == (), name


def test_unreadable_parts_flagged_and_left_out() -> None:
    summary = {"total-successful-session-count": 2, "total-failure-session-count": 1}
    good = {"policy": {"policy-type": "sts", "policy-domain": "a.example"}, "summary": summary}
    doc = minimal(
        policies=[
            good | {"failure-details": [
                "text",
                {"failed-session-count": 1},
                {"result-type": "certificate-expired", "failed-session-count": "1"},
                {"result-type": "x-new", "failed-session-count": 1, "receiving-ip": 7},
            ]},
            {"policy": {"policy-type": "sts", "policy-domain": "b.example"},
             "summary": summary | {"total-failure-session-count": -1}},
            {"policy": {"policy-type": "sts", "policy-domain": "bad domain!"}, "summary": summary},
            {"summary": summary},
            [],
        ],
        **{"date-range": {
            "start-datetime": "2024-05-02T00:00:00Z", "end-datetime": "2024-05-01T00:00:00Z",
        }},
    )  # fmt: skip
    doc["policies"][0]["policy"]["mx-host"] = ["mx.a.example", 5]
    report = parse(doc)
    (policy,) = report.policies
    assert policy.policy_domain == "a.example" and policy.mx_host == ("mx.a.example",)
    (detail,) = policy.failures
    assert (detail.result_type, detail.receiving_ip) == ("x-new", None)
    found = warnings(report)
    detail_out = "this failure detail is not counted (the stored JSON keeps it)"
    policy_out = "this policy is not counted (the stored JSON keeps it)"
    assert found[0] == "date-range: end-datetime is before start-datetime"
    assert found[1] == "policies[0].policy.mx-host[1]: must be a string; left out"
    assert found[2:8] == [
        f"policies[0].failure-details[0]: must be an object; {detail_out}",
        f"policies[0].failure-details[1].result-type: missing; {detail_out}",
        f"policies[0].failure-details[2].failed-session-count: must be an integer; {detail_out}",
        "policies[0].failure-details[3].result-type: 'x-new' is not an RFC 8460 result type; "
        "kept as written",
        "policies[0].failure-details[3].receiving-ip: must be a string; stored as absent",
        "policies[1].summary.total-failure-session-count: must be between 0 and 2^63-1; "
        f"{policy_out}",
    ]
    assert found[8].startswith("policies[2].policy.policy-domain: invalid label")
    assert found[9:] == [
        f"policies[3].policy: missing; {policy_out}",
        f"policies[4]: must be an object; {policy_out}",
    ]


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
    assert warnings(report) == [
        "x-top: not an RFC 8460 field; kept as written",
        "date-range.x-zone: not an RFC 8460 field; kept as written",
        "policies[0].failure-details[0].result-type: 'certificate-revoked' is not an RFC 8460 "
        "result type; kept as written",
        "policies[0].failure-details[0].x-detail: not an RFC 8460 field; kept as written",
        "policies[0].x-entry: not an RFC 8460 field; kept as written",
        "policies[0].policy.x-policy: not an RFC 8460 field; kept as written",
        "policies[0].summary.x-summary: not an RFC 8460 field; kept as written",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"policies": None}, "policies: missing"),
        ({"policies": {}}, "policies: must be an array"),
        ({"report-id": "  "}, "report-id: must not be blank"),
        ({"organization-name": 5}, "organization-name: must be a string"),
        ({"date-range": "today"}, "date-range: must be an object"),
        (
            {"date-range": {"start-datetime": "yesterday", "end-datetime": "2024-05-01T00:00:00Z"}},
            "date-range.start-datetime: 'yesterday' is not an RFC 3339 date-time",
        ),
    ],
)
def test_not_a_report(change: dict[str, Any], expected: str) -> None:
    # Refused: what identifies the report, its day or its policies can not be read.
    assert problems(minimal(**change)) == [expected]


def test_empty_policies_and_contact_info_of_another_type_flagged() -> None:
    report = parse(minimal(policies=[], **{"contact-info": 5}))
    assert report.policies == () and report.contact_info is None
    assert warnings(report) == [
        "contact-info: must be a string; stored as absent",
        "policies: empty: the report counts no sessions",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1, "must be between 0 and 2^63-1"),
        (2**63, "must be between 0 and 2^63-1"),
        (1.5, "must be an integer"),
        (True, "must be an integer"),
        ("3", "must be an integer"),
    ],
)
def test_bad_counts_leave_the_policy_uncounted(value: Any, expected: str) -> None:
    doc = minimal()
    doc["policies"][0]["summary"]["total-successful-session-count"] = value
    report = parse(doc)
    assert report.policies == ()
    assert warnings(report) == [
        f"policies[0].summary.total-successful-session-count: {expected}; "
        "this policy is not counted (the stored JSON keeps it)"
    ]


def test_zone_index_ip_stored_as_absent() -> None:
    # PostgreSQL's inet can not hold a zone index: read as absent, never a 500 later.
    doc = minimal()
    doc["policies"][0]["failure-details"] = [
        {"result-type": "certificate-expired", "failed-session-count": 1,
         "sending-mta-ip": "fe80::1%eth0", "receiving-ip": "1.2.3"},
    ]  # fmt: skip
    report = parse(doc)
    (detail,) = report.policies[0].failures
    assert (detail.sending_mta_ip, detail.receiving_ip) == (None, None)
    assert [w.path for w in report.warnings] == [
        "policies[0].failure-details[0].sending-mta-ip",
        "policies[0].failure-details[0].receiving-ip",
    ]


def test_policy_domain_normalised_to_a_label() -> None:
    doc = minimal()
    doc["policies"][0]["policy"]["policy-domain"] = "Bücher.Example."
    doc["policies"][0]["policy"]["mx-host"] = ["MX1.Bücher.example.", "", "*.Weird_Host!"]
    policy = parse(doc).policies[0]
    assert policy.policy_domain == "xn--bcher-kva.example"
    assert policy.mx_host == ("mx1.xn--bcher-kva.example", "*.weird_host!")


def test_problems_and_warnings_are_capped_and_escaped() -> None:
    summary = {"total-successful-session-count": 1, "total-failure-session-count": 0}
    doc = minimal(policies=[{"policy": {"policy-type": "x\n\x1b[31m"}, "summary": summary}] * 50)
    found = warnings(parse(doc))
    assert len(found) == MAX_WARNINGS + 1
    assert found[-1] == "50 more warnings not listed"
    assert "\n" not in "".join(found) and "\x1b" not in "".join(found)
    assert "unknown policy-type 'x\\u000a\\u001b[31m'" in found[0]


def test_not_json_and_not_an_object() -> None:
    assert problems(b"\xff\xfe".decode("latin-1"))[0] == "a report is a JSON object"
    with pytest.raises(InvalidReportError, match="not valid JSON"):
        parse_report(b'{"policies": [')


def test_nesting_flagged_and_nul_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    # An unknown key nested too deep is not kept (the stored JSON has it).
    report = parse(minimal(x=deep))
    assert report.extra == {} and warnings(report) == ["x: nested deeper than 8 levels"]
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


SAMPLE_ENTRIES = [
    entry
    for name in sorted((SAMPLES / "json").iterdir())
    for entry in orjson.loads(name.read_bytes())["policies"]
]
PLAIN_ENTRIES: list[Any] = [
    {
        "policy": {
            "policy-type": "sts",
            "policy-domain": " Example.COM. ",
            "policy-string": ["version: STSv1", " ", "mode: enforce "],
            "mx-host": ["*.Mail.Example.com", ""],
        },
        "summary": {"total-successful-session-count": 0, "total-failure-session-count": 3},
        "failure-details": [
            {
                "result-type": "validation-failure",
                "failed-session-count": 3,
                "sending-mta-ip": "2001:DB8::1",
                "receiving-mx-hostname": "mx.example.com",
            }
        ],
    },
    {
        "policy": {"policy-type": "no-policy-found", "policy-domain": "bücher.example"},
        "summary": {"total-successful-session-count": 5, "total-failure-session-count": 0},
    },
]
NOT_PLAIN_ENTRIES: list[Any] = [
    "not an object",
    {"policy": {"policy-type": "sts", "policy-domain": "a.example"}, "summary": {}},
    {
        "policy": {"policy-type": "sts", "policy-domain": "a.example", "x": 1},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
    },
    {
        "policy": {"policy-type": "sts", "policy-domain": "a.example", "mx-host": "mx.a"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
    },
    {
        "policy": {
            "policy-type": "tlsa",
            "policy-domain": "a.example",
            "policy-string": ['["3 1 1 AB"]'],
        },
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
    },
    {
        "policy": {"policy-type": "sts", "policy-domain": "-bad-.example"},
        "summary": {"total-successful-session-count": 1, "total-failure-session-count": 0},
    },
    {
        "policy": {"policy-type": "sts", "policy-domain": "a.example"},
        "summary": {"total-successful-session-count": True, "total-failure-session-count": 0},
    },
]


@pytest.mark.parametrize("entry", PLAIN_ENTRIES)
def test_plain_policy_reads_an_entry_as_the_field_by_field_reader(entry: Any) -> None:
    plain, full = _Reader(Limits()), _Reader(Limits())
    read = plain.plain_policy(entry, 0)
    assert read is not None
    assert read == full.policy(entry, "policies[0]")
    assert plain.warnings == full.warnings


def test_sample_entries_read_alike_by_both_readers() -> None:
    plain_ones = 0
    for index, entry in enumerate(SAMPLE_ENTRIES):
        plain, full = _Reader(Limits()), _Reader(Limits())
        read = plain.plain_policy(entry, index)
        if read is not None:
            plain_ones += 1
            assert read == full.policy(entry, f"policies[{index}]")
            assert plain.warnings == full.warnings == []
    # Only Microsoft's JSON-encoded TLSA string and the RFC's mx-host string are not.
    assert plain_ones == len(SAMPLE_ENTRIES) - 2


@pytest.mark.parametrize("entry", NOT_PLAIN_ENTRIES)
def test_entries_with_anything_to_flag_are_left_to_the_field_by_field_reader(
    entry: Any,
) -> None:
    reader = _Reader(Limits())
    assert reader.plain_policy(entry, 0) is None
    assert reader.warnings == []
