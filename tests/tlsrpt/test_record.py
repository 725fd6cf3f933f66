"""RFC 8460 §3 record grammar: selection among TXT records, parsing, formatting."""

from __future__ import annotations

import pytest

from app.tlsrpt.record import (
    MultipleRecordsError,
    NoRecordError,
    RecordSyntaxError,
    ReportUri,
    format_record,
    is_tlsrpt,
    parse_record,
    select_record,
    split_txt_strings,
)


def usable(text: str) -> list[str]:
    return [item.uri for item in parse_record(text).usable_rua]


# --- valid variants ---------------------------------------------------------------------


def test_minimal_record() -> None:
    record = parse_record("v=TLSRPTv1;rua=mailto:tlsrpt@example.com")
    assert record.rua == (ReportUri("mailto:tlsrpt@example.com", "mailto"),)
    assert record.extensions == ()


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv1; rua=mailto:a@example.com",
        "v=TLSRPTv1 ;rua=mailto:a@example.com",
        "v=TLSRPTv1\t;\trua=mailto:a@example.com",
        "v=TLSRPTv1;rua=mailto:a@example.com;",
        "v=TLSRPTv1; rua=mailto:a@example.com ; ",
        "v=TLSRPTv1;  rua=mailto:a@example.com\t;\t",
    ],
)
def test_spacing_and_trailing_delimiter(text: str) -> None:
    assert usable(text) == ["mailto:a@example.com"]


def test_comma_list_and_several_rua_fields_keep_order() -> None:
    text = (
        "v=TLSRPTv1; rua=mailto:a@example.com , https://reports.example.net/tlsrpt;"
        "rua=mailto:b@example.org,mailto:a@example.com"
    )
    assert usable(text) == [
        "mailto:a@example.com",
        "https://reports.example.net/tlsrpt",
        "mailto:b@example.org",
    ]
    assert len(parse_record(text).rua) == 4  # the duplicate is kept in rua, once in usable


def test_extensions_are_kept_and_ignored() -> None:
    record = parse_record("v=TLSRPTv1; x-mode=test; rua=mailto:a@example.com; ext.v2=1:2")
    assert record.extensions == (("x-mode", "test"), ("ext.v2", "1:2"))
    assert [u.uri for u in record.usable_rua] == ["mailto:a@example.com"]


def test_multi_string_txt_joined_without_separator() -> None:
    strings = [b"v=TLSRPTv1; rua=mailto:tls", b"rpt@exa", b"mple.com,https://r.example/x"]
    record = select_record([[b"v=spf1 -all"], strings])
    assert [u.uri for u in record.usable_rua] == [
        "mailto:tlsrpt@example.com",
        "https://r.example/x",
    ]


def test_mailto_query_ignored_and_escapes_decoded() -> None:
    assert usable("v=TLSRPTv1; rua=mailto:tls%2Brpt@Example.COM?subject=hi") == [
        "mailto:tls+rpt@example.com"
    ]


def test_mailto_with_encoded_comma_gives_two_addresses() -> None:
    assert usable("v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.org") == [
        "mailto:a@example.com",
        "mailto:b@example.org",
    ]


def test_idna_domains_become_a_labels() -> None:
    assert usable("v=TLSRPTv1; rua=mailto:rpt@bücher.example,https://bücher.example/r") == [
        "mailto:rpt@xn--bcher-kva.example",
        "https://xn--bcher-kva.example/r",
    ]
    assert usable("v=TLSRPTv1; rua=mailto:rpt@b%C3%BCcher.example") == [
        "mailto:rpt@xn--bcher-kva.example"
    ]
    record = select_record([["v=TLSRPTv1; rua=mailto:rpt@☺.example".encode()]])
    assert record.usable_rua[0].uri == "mailto:rpt@xn--74h.example"


def test_https_normalised() -> None:
    assert usable("v=TLSRPTv1; rua=HTTPS://Reports.Example.COM:443/a%2Cb?x=1#frag") == [
        "https://reports.example.com/a%2Cb?x=1"
    ]
    assert usable("v=TLSRPTv1; rua=https://r.example:8443") == ["https://r.example:8443/"]
    assert usable("v=TLSRPTv1; rua=https://[2001:DB8::1]/r") == ["https://[2001:db8::1]/r"]


def test_unusable_uris_are_kept_with_reason() -> None:
    record = parse_record(
        "v=TLSRPTv1; rua=http://r.example/x,ftp://r.example,mailto:,mailto:no-at-sign,"
        "https:///nohost,https://user:pw@r.example/,mailto:a..b@example.com,"
        "mailto:a@bad_label-.example"
    )
    assert record.usable_rua == ()
    problems = [(u.kind, u.problem) for u in record.rua]
    assert problems[0] == ("http", "scheme 'http' is not mailto or https")
    assert problems[1] == ("ftp", "scheme 'ftp' is not mailto or https")
    assert all(problem for _, problem in problems)
    assert "credentials" in (problems[5][1] or "")


# --- selection among TXT records --------------------------------------------------------


def test_no_txt_or_no_tlsrpt_record() -> None:
    with pytest.raises(NoRecordError):
        select_record([])
    with pytest.raises(NoRecordError):
        select_record([[b"v=spf1 -all"], [b"google-site-verification=x"]])


@pytest.mark.parametrize(
    "text",
    [
        "v=TLSRPTv10; rua=mailto:a@example.com",
        "v=TLSRPTv1x",
        "V=TLSRPTv1; rua=x:y",
        " v=TLSRPTv1; rua=mailto:a@example.com",
        "v=tlsrptv1; rua=mailto:a@example.com",
    ],
)
def test_other_versions_are_not_tlsrpt_records(text: str) -> None:
    assert not is_tlsrpt(text)
    with pytest.raises(NoRecordError):
        select_record([[text.encode()]])


def test_two_tlsrpt_records_are_multiple() -> None:
    with pytest.raises(MultipleRecordsError):
        select_record(
            [[b"v=TLSRPTv1; rua=mailto:a@example.com"], [b"v=TLSRPTv1; rua=mailto:b@example.com"]]
        )


def test_other_records_beside_one_tlsrpt_record_are_ignored() -> None:
    record = select_record(
        [[b"v=TLSRPTv10; rua=mailto:x@example.com"], [b"v=TLSRPTv1;rua=mailto:a@example.com"]]
    )
    assert record.usable_rua[0].uri == "mailto:a@example.com"


def test_invalid_utf8_is_a_syntax_error() -> None:
    with pytest.raises(RecordSyntaxError, match="UTF-8"):
        select_record([[b"v=TLSRPTv1; rua=mailto:a@\xff.example"]])


# --- rejections -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("v=TLSRPTv1", "no fields"),
        ("v=TLSRPTv1;", "no fields"),
        ("v=TLSRPTv1; ", "no fields"),
        ("v=TLSRPTv1 rua=mailto:a@example.com", "expected ';'"),
        ("v=TLSRPTv1; x=1", "no rua"),
        ("v=TLSRPTv1; RUA=mailto:a@example.com", "no rua"),
        ("v=TLSRPTv1;; rua=mailto:a@example.com", "not name=value"),
        ("v=TLSRPTv1; rua=mailto:a@example.com;;", "not name=value"),
        ("v=TLSRPTv1; rua", "not name=value"),
        ("v=TLSRPTv1; rua=", "empty"),
        ("v=TLSRPTv1; rua=mailto:a@example.com,", "empty"),
        ("v=TLSRPTv1; rua=a@example.com", "no scheme"),
        ("v=TLSRPTv1; rua=//r.example/x", "no scheme"),
        ("v=TLSRPTv1; rua=mailto:a@example.com mailto:b@example.com", "invalid characters"),
        ("v=TLSRPTv1; rua=https://r.example/a!b", "invalid characters"),
        ('v=TLSRPTv1; rua=https://r.example/"x"', "invalid characters"),
        ("v=TLSRPTv1; rua=https://r.example/%zz", "invalid characters"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; -x=1", "invalid field name"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; " + "x" * 33 + "=1", "invalid field name"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; x=a b", "invalid value"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; x=a=b", "invalid value"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; x=", "invalid value"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; x=\x01", "invalid value"),
    ],
)
def test_syntax_errors(text: str, reason: str) -> None:
    with pytest.raises(RecordSyntaxError, match=reason):
        parse_record(text)
    with pytest.raises(RecordSyntaxError):
        select_record([[text.encode()]])


def test_error_messages_cut_hostile_text() -> None:
    with pytest.raises(RecordSyntaxError) as info:
        parse_record("v=TLSRPTv1; rua=" + "a" * 5000)
    assert len(str(info.value)) < 200


# --- formatting -------------------------------------------------------------------------


def test_format_round_trips() -> None:
    text = format_record(
        ["mailto:tlsrpt@Bücher.example", "https://r.example/a!b,c", "mailto:tlsrpt@bücher.example"],
        [("x-note", "1")],
    )
    assert text == (
        "v=TLSRPTv1; rua=mailto:tlsrpt@xn--bcher-kva.example,https://r.example/a%21b%2Cc; x-note=1"
    )
    assert text.isascii()
    assert [u.uri for u in parse_record(text).usable_rua] == [
        "mailto:tlsrpt@xn--bcher-kva.example",
        "https://r.example/a%21b%2Cc",
    ]


@pytest.mark.parametrize(
    ("rua", "extensions"),
    [
        ([], []),
        (["http://r.example"], []),
        (["r.example"], []),
        (["mailto:a@example.com"], [("rua", "x")]),
        (["mailto:a@example.com"], [("x", "a;b")]),
        (["mailto:a@example.com,mailto:b@example.com"], []),
    ],
)
def test_format_refuses_invalid_input(rua: list[str], extensions: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        format_record(rua, extensions)


def test_split_txt_strings() -> None:
    text = format_record([f"mailto:reports{i}@example.com" for i in range(20)])
    strings = split_txt_strings(text)
    assert all(len(s) <= 255 for s in strings)
    assert len(strings) > 1
    record = select_record([[s.encode() for s in strings]])
    assert len(record.usable_rua) == 20
