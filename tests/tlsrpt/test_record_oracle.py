"""The `_smtp._tls` record parser against an oracle: checkdmarc's RFC 8460 §3 parser.

A Hypothesis corpus of records (valid ones, near misses, hostile text) goes through both
parsers. They must agree on whether a record is one this service would send reports by:
ours accepts it with every rua usable, checkdmarc parses it without error. Where they
differ, the difference is one of `DIFFERENCES`, each shown by an explicit case below with
the RFC text that makes ours right; anything else fails. Disagreements found by this test
and fixed in `app/tlsrpt/record.py`: a path with `[` `]`, a second `#` (RFC 3986: not a
URI, so not a record) and `https://host:0` (no server listens there: unusable).

Deterministic (derandomized, bounded examples, no example database) so CI can not flake,
and offline: checkdmarc's parser does no DNS, and any lookup attempt fails the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import dns.resolver
import pytest
from checkdmarc.smtp_tls_reporting import (
    SMTPTLSReportingError,
    parse_smtp_tls_reporting_record,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.tlsrpt.record import RecordSyntaxError, parse_record

# Why ours and checkdmarc differ, by the case that shows it.
DIFFERENCES = {
    # Ours keeps the record and marks the URI unusable, with the reason (shown in
    # previews); checkdmarc refuses the whole record.
    "unusable scheme": "RFC 8460 §3: tlsrpt-uri = URI (RFC 3986), any scheme; only "
    "mailto and https are defined for delivery, so another scheme is a URI we can not use",
    "unusable address": "RFC 8460 §3: a URI whose address or host can not be delivered to "
    "is still a URI; the record stays valid and its other rua are used",
    "numeric host": "RFC 3986 §3.2.2 reg-name allows digits, but a host of digits and dots "
    "that is not a dotted quad is read as an address by some resolvers (SSRF): unusable",
    "port out of range": "RFC 3986 §3.2.3 port = *DIGIT: syntax allows it, TCP does not",
    "port zero": "RFC 3986 §3.2.3 allows port 0; RFC 6335 §6 reserves it: nothing listens",
    "mailto comma": "RFC 8460 §3: ',' in a URI MUST be encoded; RFC 6068 §2: %2C in a "
    "mailto separates addresses, so 'a%2Cb@x' is two addresses and 'a' is not one",
    # Ours accepts what checkdmarc's regular expressions are stricter about than RFC 3986.
    "empty port": "RFC 3986 §3.2.3: port = *DIGIT, an empty port means the default",
    "mailto hfields": "RFC 6068 §2: mailto:addr?hfields is a mailto URI; the query has no "
    "meaning for reports and is dropped",
    "underscore host": "RFC 3986 §3.2.2: reg-name includes '_' (unreserved)",
    "IRI": "RFC 8460 §3 asks for a URI; a domain written in Unicode (an IRI, RFC 3987) is "
    "read as its A-label (RFC 5891), the only reading it can have",
    # checkdmarc skips a repeated `v=` without looking at its value.
    "bad extension value": "RFC 8460 §3: a field after the version is a tlsrpt-extension "
    "whose tlsrpt-ext-value is 1*(%x21-3A / %x3C / %x3E-7E): no control characters",
}


@contextmanager
def no_dns() -> Iterator[None]:
    """Any DNS lookup or name resolution in the block fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the parsers must not touch the network")

    with (
        mock.patch.object(dns.resolver.Resolver, "resolve", refuse),
        mock.patch.object(socket, "getaddrinfo", refuse),
    ):
        yield


def ours(text: str) -> tuple[bool, str]:
    """(would send reports by it, why not)."""
    try:
        record = parse_record(text)
    except RecordSyntaxError as exc:
        return False, str(exc)
    for uri in record.rua:
        if uri.problem:
            return False, f"{uri.uri}: {uri.problem}"
    return True, ""


def theirs(text: str) -> tuple[bool, str]:
    try:
        parse_smtp_tls_reporting_record(text)
    except SMTPTLSReportingError as exc:
        return False, str(exc)
    return True, ""


def difference(text: str) -> str | None:
    """Which of DIFFERENCES explains a disagreement on `text`; None when none does."""
    our_ok, our_reason = ours(text)
    their_ok, their_reason = theirs(text)
    if our_ok == their_ok:
        return None
    if not their_ok:
        # checkdmarc refuses a URI ours reads: name the URI's trait.
        uri = their_reason.partition(" is not a valid SMTP TLS Reporting URI")[0]
        if not uri.isascii():
            return "IRI"
        scheme, _, rest = uri.partition(":")
        if scheme.lower() == "mailto" and "?" in rest:
            return "mailto hfields"
        authority = rest[2:].split("/", 1)[0]
        if scheme.lower() == "https" and authority.endswith(":"):
            return "empty port"
        if scheme.lower() == "https" and "_" in authority:
            return "underscore host"
        return "unexplained: " + their_reason
    if "invalid value for 'v'" in our_reason:
        return "bad extension value"
    if "is not mailto or https" in our_reason:
        return "unusable scheme"
    if "is not an IP address" in our_reason:
        return "numeric host"
    if "Port out of range" in our_reason:
        return "port out of range"
    if "port 0" in our_reason:
        return "port zero"
    if "%2c" in text.lower() and "invalid address" in our_reason:
        return "mailto comma"
    if "invalid label" in our_reason or "invalid address" in our_reason:
        return "unusable address"
    return "unexplained: " + our_reason


# ------------------------------------------------------------------ the explicit cases


@pytest.mark.parametrize(
    ("record", "ours_sends", "reason"),
    [
        ("v=TLSRPTv1; rua=https://r.example:0/", False, "port zero"),
        ("v=TLSRPTv1; rua=mailto:a@-b.example", False, "unusable address"),
        ("v=TLSRPTv1; rua=https://-r.example/", False, "unusable address"),
        ("v=TLSRPTv1; rua=https://10/", False, "numeric host"),
        ("v=TLSRPTv1; rua=https://127.1/", False, "numeric host"),
        ("v=TLSRPTv1; rua=https://r.example:99999/", False, "port out of range"),
        ("v=TLSRPTv1; rua=mailto:a%2Cb@r.example", False, "mailto comma"),
        ("v=TLSRPTv1; rua=https://r.example:/x", True, "empty port"),
        ("v=TLSRPTv1; rua=mailto:a@r.example?subject=tlsrpt", True, "mailto hfields"),
        ("v=TLSRPTv1; rua=https://r_1.example/", True, "underscore host"),
        ("v=TLSRPTv1; rua=mailto:tlsrpt@bücher.example", True, "IRI"),
        ("v=TLSRPTv1; rua=https://bücher.example/r", True, "IRI"),
        ("v=TLSRPTv1; v=a\x1bb; rua=mailto:a@r.example", False, "bad extension value"),
    ],
)
def test_each_difference_from_checkdmarc_is_deliberate(
    record: str, ours_sends: bool, reason: str
) -> None:
    with no_dns():
        assert ours(record)[0] is ours_sends
        assert theirs(record)[0] is not ours_sends
        assert difference(record) == reason
    assert reason in DIFFERENCES


def test_unusable_rua_kept_with_its_reason_where_checkdmarc_refuses_the_record() -> None:
    # "unusable scheme": both say no to sending by this record as a whole, but ours
    # keeps it and uses its other rua, and says why the first can not be used.
    text = "v=TLSRPTv1; rua=http://r.example/x,mailto:a@r.example"
    with no_dns():
        assert theirs(text)[0] is False
        record = parse_record(text)
    assert [(u.uri, u.problem) for u in record.rua] == [
        ("http://r.example/x", "scheme 'http' is not mailto or https"),
        ("mailto:a@r.example", None),
    ]
    assert "unusable scheme" in DIFFERENCES


@pytest.mark.parametrize(
    "record",
    [
        "v=TLSRPTv1; rua=https://r.example/[x]",
        "v=TLSRPTv1; rua=https://r.example/p#a#b",
        "v=TLSRPTv1; rua=https://r[1]/",
        "v=TLSRPTv1; rua=mailto:a@[192.0.2.1]",
    ],
)
def test_brackets_and_fragments_outside_rfc_3986_are_refused_as_checkdmarc_does(
    record: str,
) -> None:
    # Found by the differential test: ours used to accept these (RFC 3986 §3.2.2: "["
    # and "]" only around an IP literal; §3.5: one "#"; RFC 6068 §2: encoded in mailto).
    with no_dns():
        assert theirs(record)[0] is False
        with pytest.raises(RecordSyntaxError):
            parse_record(record)


def test_ipv6_literal_hosts_agree() -> None:
    with no_dns():
        for record in (
            "v=TLSRPTv1; rua=https://[2001:db8::1]:8443/r",
            "v=TLSRPTv1;rua=https://[::1]/",
        ):
            assert ours(record) == (True, "") and theirs(record) == (True, "")
        assert (
            ours("v=TLSRPTv1; rua=https://[::::]/")[0]
            is theirs("v=TLSRPTv1; rua=https://[::::]/")[0]
        )


# ------------------------------------------------------------------ the generated corpus

_WSP = st.sampled_from(["", " ", "\t", "  "])
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_LOCAL = st.from_regex(r"[a-zA-Z0-9._+=-]{1,10}", fullmatch=True)
_PATH = st.from_regex(r"(/[a-zA-Z0-9._~%!,;:@&=+$-]{0,6}){0,3}", fullmatch=True)
_PORT = st.sampled_from(["", ":443", ":8443", ":", ":0", ":99999"])
_ODD = st.sampled_from(
    [
        "http://r.example/x", "ftp://r.example", "mailto:", "https://", "mailto:a@b@c",
        "x:y", "https://[::1]/", "https://[::::]/", "https://192.0.2.1/", "https://10/",
        "mailto:a%2Cb@r.example", "MAILTO:a@r.example", "HTTPS://R.EXAMPLE/",
        "mailto:tlsrpt@bücher.example", "https://bücher.example/r", "https://u@r.example/",
        "https://r.example/p#f", "https://r.example/p#f#g", "https://r.example/%zz",
        "mailto:a@r.example?subject=x", "https://r_b.example/", "https://-r.example/",
        "mailto:a@-b.example", "https://r.example/[x]", "mailto:.a@r.example",
    ]
)  # fmt: skip
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_URI = st.one_of(
    st.builds(lambda local, domain: f"mailto:{local}@{domain}", _LOCAL, _DOMAIN),
    st.builds(lambda d, port, path: f"https://{d}{port}{path}", _DOMAIN, _PORT, _PATH),
    _ODD,
    st.text(alphabet=_PRINTABLE, max_size=10),
)
_RUA = st.builds(
    lambda uris, wsp: "rua=" + f"{wsp},{wsp}".join(uris),
    st.lists(_URI, min_size=1, max_size=3),
    _WSP,
)
_EXTENSION = st.builds(
    lambda name, value: f"{name}={value}",
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,3}", fullmatch=True)
    | st.sampled_from(["", "-x", "a b", "RUA", "v"]),
    st.text(alphabet=st.characters(min_codepoint=0x09, max_codepoint=0x7E), max_size=6),
)
_FIELD = st.one_of(_RUA, _RUA, _EXTENSION, st.text(alphabet=_PRINTABLE, max_size=8))
_RECORD = st.builds(
    lambda version, fields, delimiter, trailing: (
        version + delimiter + delimiter.join(fields) + (delimiter if trailing else "")
    ),
    st.sampled_from(["v=TLSRPTv1", "v=TLSRPTv1 ", "v=tlsrptv1", "v=TLSRPTv10"]),
    st.lists(_FIELD, min_size=0, max_size=4),
    st.sampled_from([";", "; ", " ;", " ; ", "\t;", ";;"]),
    st.booleans(),
)


@settings(
    max_examples=600,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(_RECORD)
def test_ours_agrees_with_checkdmarc_or_differs_for_a_stated_reason(record: str) -> None:
    with no_dns():
        reason = difference(record)
    assert reason is None or reason in DIFFERENCES, f"{record!r}: {reason}"
