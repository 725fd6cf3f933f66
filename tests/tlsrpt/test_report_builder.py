"""RFC 8460 §4.4 report building from aggregated counters, and the §5.1 file name."""

from __future__ import annotations

import gzip
import re
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.tlsrpt.model import FailureDetail, Policy, PolicyAggregate, PolicyType, ResultType
from app.tlsrpt.names import normalise_ip
from app.tlsrpt.report import (
    Reporter,
    build_report,
    check_report_id,
    format_filename,
    submitter_domain,
)

SAMPLE = Path("/work/shared/samples/json/rfc8460_appendix-b_verbatim.json")


def counts(
    policy: Policy, ok: int, failed: int, details: list[tuple[FailureDetail, int]] | None = None
) -> PolicyAggregate:
    return PolicyAggregate(policy, ok, failed, ok + failed, details or [])


COMPANY_X = Reporter("Company-X", "sts-reporting@company-x.example")


def appendix_b_counts() -> PolicyAggregate:
    """The counters ingest would hold for the RFC 8460 Appendix B day."""
    policy = Policy(
        PolicyType.STS,
        "company-y.example",
        ("version: STSv1", "mode: testing", "mx: *.mail.company-y.example", "max_age: 86400"),
        ("*.mail.company-y.example",),
    )
    details = (
        (
            FailureDetail(
                ResultType.STARTTLS_NOT_SUPPORTED,
                sending_mta_ip=normalise_ip("2001:db8:abcd:0013::1"),
                receiving_mx_hostname="mx2.mail.company-y.example",
                receiving_ip="203.0.113.56",
                additional_information=(
                    "https://reports.company-x.example/report_info?id=5065427c-23d3"
                    "#StarttlsNotSupported"
                ),
            ),
            200,
        ),
        (
            FailureDetail(
                ResultType.VALIDATION_FAILURE,
                sending_mta_ip="198.51.100.62",
                receiving_mx_hostname="mx-backup.mail.company-y.example",
                receiving_ip="203.0.113.58",
                failure_reason_code="X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
            ),
            3,
        ),
        (
            FailureDetail(
                ResultType.CERTIFICATE_EXPIRED,
                sending_mta_ip=normalise_ip("2001:db8:abcd:0012::1"),
                receiving_mx_hostname="mx1.mail.company-y.example",
            ),
            100,
        ),
    )
    return PolicyAggregate(policy, 5326, 303, 5629, list(details))


def expected_appendix_b() -> dict[str, Any]:
    """Appendix B as printed, with mx-host an array (erratum 6241) and IPs canonical."""
    expected: dict[str, Any] = orjson.loads(SAMPLE.read_bytes())
    policy = expected["policies"][0]["policy"]
    policy["mx-host"] = [policy["mx-host"]]
    for detail in expected["policies"][0]["failure-details"]:
        detail["sending-mta-ip"] = normalise_ip(detail["sending-mta-ip"])
    return expected


def test_reproduces_rfc8460_appendix_b() -> None:
    built = build_report(
        COMPANY_X,
        date(2016, 4, 1),
        "company-y.example",
        [appendix_b_counts()],
        report_id="5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    )
    document = orjson.loads(built.json)
    assert document == expected_appendix_b()
    # Field order as RFC 8460 §4.4 lists the fields; details sorted like Appendix B.
    assert list(document) == [
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    ]
    assert list(document["policies"][0]["policy"]) == [
        "policy-type",
        "policy-string",
        "policy-domain",
        "mx-host",
    ]
    details = document["policies"][0]["failure-details"]
    assert [d["result-type"] for d in details] == [
        "certificate-expired",
        "starttls-not-supported",
        "validation-failure",
    ]
    assert list(details[1]) == [
        "result-type",
        "sending-mta-ip",
        "receiving-mx-hostname",
        "receiving-ip",
        "failed-session-count",
        "additional-information",
    ]
    assert gzip.decompress(built.gzip) == built.json
    assert re.fullmatch(
        r"company-x\.example!company-y\.example!1459468800!1459555199![a-z0-9]+\.json\.gz",
        built.filename,
    )


def test_same_counters_give_same_bytes() -> None:
    original = appendix_b_counts()
    shuffled = PolicyAggregate(
        original.policy, 5326, 303, 5629, list(reversed(original.failure_details))
    )
    one = build_report(COMPANY_X, date(2016, 4, 1), "company-y.example", [original])
    two = build_report(COMPANY_X, date(2016, 4, 1), "company-y.example", [shuffled])
    assert one == two


def test_generated_report_id_fits_in_angle_brackets() -> None:
    built = build_report(COMPANY_X, date(2024, 2, 29), "company-y.example", [appendix_b_counts()])
    assert built.report_id == "20240229.company-y.example@company-x.example"
    assert built.report_id.count("@") == 1
    assert not re.search(r"[\s<>]", built.report_id)
    other = build_report(COMPANY_X, date(2024, 3, 1), "company-y.example", [appendix_b_counts()])
    assert other.report_id != built.report_id
    assert other.filename.split("!")[-1] != built.filename.split("!")[-1]


@pytest.mark.parametrize("bad", ["a b@c", "a@b@c", "<a@b>", "a@", "@b", "a.@b", "a@b..c", "ab"])
def test_check_report_id_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        check_report_id(bad)


def test_date_range_is_the_data_day() -> None:
    built = build_report(COMPANY_X, date(2023, 12, 31), "company-y.example", [appendix_b_counts()])
    document = orjson.loads(built.json)
    assert document["date-range"] == {
        "start-datetime": "2023-12-31T00:00:00Z",
        "end-datetime": "2023-12-31T23:59:59Z",
    }
    _, _, begin, end, rest = built.filename.split("!")
    assert (int(begin), int(end)) == (1703980800, 1703980800 + 86399)
    assert rest.removesuffix(".json.gz").isalnum()


def test_several_policies_of_one_domain() -> None:
    domain = "example.com"
    sts_a = Policy(PolicyType.STS, domain, ("version: STSv1", "mode: testing"), ("mx.example.com",))
    sts_b = Policy(PolicyType.STS, domain, ("version: STSv1", "mode: enforce"), ("mx.example.com",))
    none = Policy(PolicyType.NO_POLICY_FOUND, domain)
    detail = FailureDetail(ResultType.STARTTLS_NOT_SUPPORTED)
    built = build_report(
        COMPANY_X,
        date(2024, 5, 1),
        domain,
        [
            counts(sts_a, 7, 2, [(detail, 2)]),
            counts(none, 40, 0),
            counts(sts_b, 0, 0),
        ],
    )
    policies = orjson.loads(built.json)["policies"]
    assert [p["policy"]["policy-type"] for p in policies] == ["no-policy-found", "sts", "sts"]
    assert policies[0] == {
        "policy": {"policy-type": "no-policy-found", "policy-string": [], "policy-domain": domain},
        "summary": {"total-successful-session-count": 40, "total-failure-session-count": 0},
    }
    assert policies[1]["policy"]["policy-string"][1] == "mode: enforce"
    assert "failure-details" not in policies[1]
    # Absent optional fields are left out, never sent as empty strings.
    assert policies[2]["failure-details"] == [
        {"result-type": "starttls-not-supported", "failed-session-count": 2}
    ]
    assert isinstance(policies[2]["summary"]["total-successful-session-count"], int)


def test_dane_policy_belongs_to_the_mx_host_report() -> None:
    tlsa = Policy(PolicyType.TLSA, "mx1.mail.example.net", ("3 1 1 AB12",))
    built = build_report(COMPANY_X, date(2024, 5, 1), "mx1.mail.example.net", [counts(tlsa, 3, 0)])
    document = orjson.loads(built.json)
    assert document["policies"][0]["policy"] == {
        "policy-type": "tlsa",
        "policy-string": ["3 1 1 AB12"],
        "policy-domain": "mx1.mail.example.net",
    }
    assert "!mx1.mail.example.net!" in built.filename
    with pytest.raises(ValueError, match=r"mx1\.mail\.example\.net"):
        build_report(COMPANY_X, date(2024, 5, 1), "example.net", [counts(tlsa, 3, 0)])


def test_idna_names_are_a_labels() -> None:
    policy = Policy(
        PolicyType.STS, "xn--bcher-kva.example", ("version: STSv1",), ("*.xn--bcher-kva.example",)
    )
    reporter = Reporter("Bücher AG", "mailto:tlsrpt@Bücher-Versand.example")
    built = build_report(reporter, date(2024, 5, 1), "Bücher.example.", [counts(policy, 1, 0)])
    assert built.policy_domain == "xn--bcher-kva.example"
    assert built.filename.startswith("xn--bcher-versand-wob.example!xn--bcher-kva.example!")
    assert built.report_id.endswith("@xn--bcher-versand-wob.example")
    document = orjson.loads(built.json)
    assert document["organization-name"] == "Bücher AG"
    assert document["policies"][0]["policy"]["policy-domain"] == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("contact", "domain"),
    [
        ("tlsrpt@Example.COM", "example.com"),
        ("mailto:tlsrpt@example.com?subject=x", "example.com"),
        ("https://Reports.Example.com/contact", "reports.example.com"),
    ],
)
def test_submitter_domain(contact: str, domain: str) -> None:
    assert submitter_domain(contact) == domain


def test_filename_epoch_and_id_characters() -> None:
    name = format_filename("Sub.Example", "bücher.example", date(1970, 1, 1), "a.b@c.d")
    assert name.startswith("sub.example!xn--bcher-kva.example!0!86399!")
    assert re.fullmatch(r"[A-Za-z0-9]+", name.split("!")[-1].removesuffix(".json.gz"))


def test_refuses_empty_reports() -> None:
    with pytest.raises(ValueError, match="at least one policy"):
        build_report(COMPANY_X, date(2024, 5, 1), "example.com", [])


@pytest.mark.parametrize("contact", ["tel:+15551234", "x@bad..example", "urn:isbn:123"])
def test_settings_refuse_contact_info_without_submitter_domain(contact: str) -> None:
    from app.config import SettingsError, load_settings

    with pytest.raises(SettingsError, match="TLSRPT_REPORT__CONTACT_INFO"):
        load_settings(report={"contact_info": contact})
