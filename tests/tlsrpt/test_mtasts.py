"""MTA-STS record and policy parsing, and MX pattern matching (RFC 8461 §3.1, §3.2, §4.1)."""

from __future__ import annotations

import pytest

from app.tlsrpt.mtasts import (
    MAX_POLICY_BYTES,
    StsPolicy,
    StsSyntaxError,
    mx_matches,
    parse_policy,
    select_sts_record,
)

# RFC 8461 §3.2's example policy.
RFC_POLICY = (
    b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
    b"mx: backupmx.example.com\r\nmax_age: 604800\r\n"
)


def test_rfc_example_policy() -> None:
    assert parse_policy(RFC_POLICY) == StsPolicy(
        mode="enforce",
        max_age=604800,
        mx=("mail.example.com", "*.example.net", "backupmx.example.com"),
    )


def test_lf_lines_unknown_fields_and_first_value_wins() -> None:
    policy = parse_policy(b"version: STSv1\nmode: none\nmode: enforce\nfoo: bar\nmax_age: 0\n")
    assert (policy.mode, policy.max_age, policy.mx) == ("none", 0, ())


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"mode: enforce\nmx: a.example\nmax_age: 1\n", "version is None"),
        (b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode is 'strict'"),
        (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
        (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "max_age '-1'"),
        (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "above"),
        (b"version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", "not a host pattern"),
        (b"version STSv1\n", "line 1"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * (MAX_POLICY_BYTES + 1), "larger than"),
    ],
)
def test_invalid_policies(body: bytes, problem: str) -> None:
    with pytest.raises(StsSyntaxError, match=problem):
        parse_policy(body)


def test_record_selection() -> None:
    assert select_sts_record([(b"v=spf1 -all",)]) is None
    record = select_sts_record([(b"v=STSv1; id=20160831085700Z;",), (b"other",)])
    assert record is not None and record.id == "20160831085700Z"
    with pytest.raises(StsSyntaxError, match="2 v=STSv1 records"):
        select_sts_record([(b"v=STSv1; id=1",), (b"v=STSv1; id=2",)])
    with pytest.raises(StsSyntaxError, match="no id"):
        select_sts_record([(b"v=STSv1; foo=bar",)])
    with pytest.raises(StsSyntaxError, match="1 to 32"):
        select_sts_record([(b"v=STSv1; id=" + b"a" * 33,)])


def test_mx_patterns() -> None:
    assert mx_matches("mail.example.com", "mail.example.com")
    assert mx_matches("MX1.example.net.", "*.example.net")
    assert not mx_matches("a.mx1.example.net", "*.example.net")  # one label only
    assert not mx_matches("example.net", "*.example.net")
    assert not mx_matches("mail.example.com", "example.com")
