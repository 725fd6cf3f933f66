"""The RFC 8460 §5.3 report mail: headers, MIME structure, DKIM, hostile values."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from datetime import UTC, date, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest

from app.delivery.mail import (
    BounceTags,
    ReportMail,
    build_report_message,
    format_message_id,
    parse_mailto,
    sender_address,
)
from app.delivery.signing import DkimKey, DkimKeyError, load_dkim_key, sign_message

NOW = datetime(2024, 5, 2, 1, 30, tzinfo=UTC)
REPORT_JSON = b'{"organization-name":"Example","report-id":"r1"}'
FILENAME = "sender.example!example.com!1714521600!1714607999.json.gz"


TAGS = BounceTags(b"\x01" * 32)


def make_mail(**changes: object) -> ReportMail:
    values: dict[str, object] = {
        "report_id": "2024-05-01T00:00:00Z_example.com@sender.example",
        "policy_domain": "example.com",
        "submitter": "sender.example",
        "day": date(2024, 5, 1),
        "filename": FILENAME,
        "report_gzip": gzip.compress(REPORT_JSON),
        "from_address": "tlsrpt@sender.example",
        "to_address": "reports@example.com",
    }
    values.update(changes)
    return ReportMail(**values)  # type: ignore[arg-type]


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def build(mail: ReportMail) -> bytes:
    return build_report_message(
        mail, now=NOW, message_id=format_message_id(mail.report_id, 7, mail.submitter, TAGS)
    )


def test_headers_are_the_rfc_8460_set() -> None:
    message = parse(build(make_mail()))
    assert message["From"] == "tlsrpt@sender.example"
    assert message["To"] == "reports@example.com"
    assert message["Date"] == "Thu, 02 May 2024 01:30:00 +0000"
    assert message["Message-ID"].startswith("<tlsrpt.7.")
    assert message["Message-ID"].endswith("@sender.example>")
    assert message["Subject"] == (
        "Report Domain: example.com Submitter: sender.example "
        "Report-ID: <2024-05-01T00:00:00Z_example.com@sender.example>"
    )
    assert message["TLS-Report-Domain"] == "example.com"
    assert message["TLS-Report-Submitter"] == "sender.example"
    assert message["TLS-Required"] == "No"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["MIME-Version"] == "1.0"
    assert [k.lower() for k in message.keys()] == [
        "from",
        "to",
        "date",
        "message-id",
        "subject",
        "tls-report-domain",
        "tls-report-submitter",
        "tls-required",
        "auto-submitted",
        "mime-version",
        "content-type",
    ]


def test_mime_structure_and_attachment() -> None:
    message = parse(build(make_mail()))
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    text, report = list(message.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert "example.com" in text.get_content()
    assert report.get_content_type() == "application/tlsrpt+gzip"
    assert report["Content-Transfer-Encoding"] == "base64"
    assert report.get_content_disposition() == "attachment"
    assert report.get_filename() == FILENAME
    assert gzip.decompress(report.get_content()) == REPORT_JSON


def test_message_id_is_stable_per_delivery() -> None:
    a = format_message_id("r@x", 1, "sender.example", TAGS)
    assert a == format_message_id("r@x", 1, "sender.example", TAGS)
    assert a != format_message_id("r@x", 2, "sender.example", TAGS)


def test_dkim_signature_verifies_in_tlsrpt_mode(
    dkim_pair: tuple[bytes, bytes], dkim_dns: Callable[..., bytes | None]
) -> None:
    key = DkimKey(domain="sender.example", selector="sel", private_key=dkim_pair[0])
    signed = sign_message(build(make_mail()), key)
    assert dkim.verify(signed, dnsfunc=dkim_dns, tlsrpt="strict")

    signature = parse(signed)["DKIM-Signature"]
    tags = {
        k.strip(): v.strip()
        for k, _, v in (t.partition("=") for t in signature.replace("\r\n", "").split(";"))
    }
    assert "l" not in tags
    assert tags["d"] == "sender.example"
    assert tags["s"] == "sel"
    signed_headers = [h.strip() for h in tags["h"].split(":")]
    assert "tls-report-domain" in signed_headers
    assert "tls-report-submitter" in signed_headers

    # Changing a TLS-Report header or the body breaks the signature.
    tampered = signed.replace(b"TLS-Report-Domain: example.com", b"TLS-Report-Domain: evil.com")
    assert not dkim.verify(tampered, dnsfunc=dkim_dns, tlsrpt="strict")
    added = signed.replace(b"TLS-Required: No", b"TLS-Required: No\r\nTLS-Report-Domain: evil.com")
    assert not dkim.verify(added, dnsfunc=dkim_dns, tlsrpt="strict")
    body = signed.replace(b"covering 2024-05-01", b"covering 2024-05-02")
    assert not dkim.verify(body, dnsfunc=dkim_dns, tlsrpt="strict")


def test_load_dkim_key(tmp_path: Path, dkim_pair: tuple[bytes, bytes]) -> None:
    assert load_dkim_key("sender.example", None, None) is None
    assert load_dkim_key("sender.example", "sel", None) is None
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_pair[0])
    key = load_dkim_key("sender.example", "sel", key_file)
    assert key is not None and key.private_key == dkim_pair[0]
    assert "PRIVATE" not in repr(key)
    with pytest.raises(DkimKeyError, match="can not read"):
        load_dkim_key("sender.example", "sel", tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyError, match="not a PEM RSA private key") as info:
        load_dkim_key("sender.example", "sel", bad)
    assert "AAAA" not in str(info.value)


@pytest.mark.parametrize(
    ("rua", "address"),
    [
        ("mailto:tlsrpt@Example.COM", "tlsrpt@example.com"),
        ("MAILTO:tls-rpt+x@example.com?subject=ignored&body=x", "tls-rpt+x@example.com"),
        ("mailto:r%40ports@b%C3%BCcher.example", None),
        ("mailto:reports@b%C3%BCcher.example", "reports@xn--bcher-kva.example"),
    ],
)
def test_parse_mailto(rua: str, address: str | None) -> None:
    if address is None:
        with pytest.raises(ValueError):
            parse_mailto(rua)
    else:
        assert parse_mailto(rua) == address


@pytest.mark.parametrize(
    "rua",
    [
        "https://example.com/",
        "mailto:",
        "mailto:a@x.example,b@y.example",
        "mailto:a@x.example%2Cb@y.example",
        "mailto:a@x.example%0D%0ABcc:%20victim@z.example",
        "mailto:a%0Abcc@x.example",
        "mailto:%22quoted%20local%22@x.example",
        "mailto:" + "a" * 65 + "@x.example",
        "mailto:a@" + "b" * 64 + ".example",
        "mailto:a@" + ".".join(["c" * 60] * 5),
    ],
)
def test_hostile_rua_is_refused(rua: str) -> None:
    with pytest.raises(ValueError):
        parse_mailto(rua)


@pytest.mark.parametrize(
    "changes",
    [
        {"policy_domain": "example.com\r\nBcc: victim@z.example"},
        {"policy_domain": "example.com\nX-Evil: 1"},
        {"policy_domain": "Example.COM"},
        {"policy_domain": ".".join(["d" * 63] * 5)},
        {"submitter": "sender.example\rX: y"},
        {"report_id": "r1>\r\nBcc: victim@z.example"},
        {"report_id": "has space@x"},
        {"report_id": "x" * 300},
        {"filename": "a.json.gz\r\nX: y"},
        {"filename": 'a".json.gz'},
        {"to_address": "a@x.example\r\nBcc: victim@z.example"},
        {"to_address": "a@x.example, b@y.example"},
        {"from_address": "tlsrpt@sender.example\nBcc: victim@z.example"},
    ],
)
def test_hostile_values_never_reach_the_message(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build(make_mail(**changes))


def test_longest_valid_names_keep_one_header_each() -> None:
    long_domain = ".".join(["d" * 63, "e" * 63, "f" * 63, "g" * 61])
    assert len(long_domain) == 253
    mail = make_mail(
        policy_domain=long_domain,
        to_address="r@" + long_domain[64:],
        report_id="i" * 200 + "@" + long_domain[:40],
    )
    raw = build(mail)
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"=?" not in raw.split(b"\r\n\r\n", 1)[0]  # no RFC 2047 encoded-words
    message = parse(raw)
    assert message["TLS-Report-Domain"] == long_domain
    assert message.get_all("TLS-Report-Domain") == [long_domain]
    assert len(message.keys()) == 11
    assert message.defects == []


def test_sender_address() -> None:
    assert sender_address(None, "tlsrpt@sender.example") == "tlsrpt@sender.example"
    assert sender_address("noreply@Mail.Sender.Example", "x") == "noreply@mail.sender.example"
    with pytest.raises(ValueError, match=r"mail\.from"):
        sender_address(None, "https://sender.example/")
