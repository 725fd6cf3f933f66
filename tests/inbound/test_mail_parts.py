"""Finding the report part in real and constructed report mails."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from app.inbound.mail import MAX_PARTS, NoReportError, find_report
from app.tlsrpt.inflate import inflate_gzip
from app.tlsrpt.received_json import parse_report
from tests.inbound.mailkit import MailFactory

SAMPLES = Path(__file__).parent.parent / "samples"
REPORT = (SAMPLES / "json/google_foo-bar-io_2025-05-22.json").read_bytes()


def test_google_mail_body_wins_over_subject_and_filename() -> None:
    found = find_report((SAMPLES / "eml/google_cardinalhealth-ca_2024-09-03.eml").read_bytes())
    assert found.gzipped and found.content_type == "application/tlsrpt+gzip"
    assert found.filename == "google.com!cardinalhealth.ca!1725321600!1725407999!001.json.gz"
    assert found.meta.report_domain == "cardinalhealth.ca"
    assert found.meta.report_submitter == "google.com"
    assert found.meta.subject is not None and "2024.09.03T00.00.00Z" in found.meta.subject
    report = parse_report(inflate_gzip(found.data, 1 << 20))
    # RFC 8460 §5.6: the report-id of the JSON, not the one of the Subject.
    assert report.report_id == "2024-09-03T00:00:00Z_cardinalhealth.ca"
    assert report.policies[0].successful_sessions == 48


def test_microsoft_mail_with_html_first_part() -> None:
    found = find_report((SAMPLES / "eml/microsoft_example-com_2026-05-13.eml").read_bytes())
    assert found.filename == (
        "microsoft.com!example.com!1778630400!1778716799!134232617934286362.json.gz"
    )
    assert found.meta.subject == (
        "Report Domain: example.com Submitter: microsoft.com Report-ID: "
        "134232617934286362+example.com"
    )
    report = parse_report(inflate_gzip(found.data, 1 << 20))
    assert report.report_id == "134232617934286362+example.com"


def test_rfc_example_message() -> None:
    found = find_report((SAMPLES / "eml/rfc8460-example-message_gzip.eml").read_bytes())
    assert found.meta.from_ == "tlsrpt@mail.sender.example.com"
    report = parse_report(inflate_gzip(found.data, 1 << 20))
    assert report.policies[0].failed_sessions == 303


@pytest.mark.parametrize(
    ("content_type", "filename", "compress"),
    [
        ("application/tlsrpt+json", None, False),
        ("application/gzip", None, True),
        ("application/x-gzip", "r.gz", True),
        ("application/json", None, False),
        ("application/octet-stream", "report.json.gz", True),
        ("application/octet-stream", "report.JSON", False),
        # The label says gzip, the bytes are JSON: the bytes decide.
        ("application/tlsrpt+gzip", "r.json.gz", False),
    ],
)
def test_tolerated_parts(
    report_mail: MailFactory, content_type: str, filename: str | None, compress: bool
) -> None:
    raw = report_mail(REPORT, content_type=content_type, filename=filename, compress=compress)
    found = find_report(raw)
    assert found.gzipped is compress
    data = inflate_gzip(found.data, 1 << 20) if compress else found.data
    assert data == REPORT


def test_exact_type_preferred_over_a_json_attachment(report_mail: MailFactory) -> None:
    raw = report_mail(b'{"decoy": 1}', content_type="application/json", compress=False)
    # Append a second, properly labelled part by rebuilding with both.
    extra = (
        b"--==boundary==\r\nContent-Type: application/tlsrpt+gzip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + __import__("base64").encodebytes(gzip.compress(REPORT)).replace(b"\n", b"\r\n")
        + b"\r\n--==boundary==--\r\n"
    )
    raw = raw.replace(b"--==boundary==--\r\n", extra)
    assert inflate_gzip(find_report(raw).data, 1 << 20) == REPORT


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n", "holds no report part"),
        (
            b"Content-Type: application/tlsrpt+gzip\r\n\r\n",
            "the report part is empty",
        ),
        (
            b"Content-Type: application/octet-stream; name=r.json\r\n\r\n<html>hi</html>\r\n",
            "is neither gzip nor JSON",
        ),
        (b"", "holds no report part"),
        (b"\x00\xff\xfe garbage \r\n\r\n\x01", "holds no report part"),
    ],
)
def test_no_report(raw: bytes, reason: str) -> None:
    with pytest.raises(NoReportError, match=reason):
        find_report(raw)


def test_too_many_parts_refused() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 1))
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    with pytest.raises(NoReportError, match="more than 1000 MIME parts"):
        find_report(raw)


def test_deep_nesting_refused_without_crash() -> None:
    depth = 3000
    head = b"".join(
        f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'.encode()
        for i in range(depth)
    )
    raw = b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + head
    with pytest.raises(NoReportError):
        find_report(raw)


def test_header_text_decoded_and_cleaned(report_mail: MailFactory) -> None:
    raw = report_mail(REPORT).replace(
        b"Subject: Report Domain", b"Subject: =?utf-8?q?caf=C3=A9?= Report Domain", 1
    )
    assert find_report(raw).meta.subject is not None
    assert find_report(raw).meta.subject.startswith("café Report Domain")  # type: ignore[union-attr]
