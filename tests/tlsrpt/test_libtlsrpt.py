"""Parsing libtlsrpt datagrams: the LIBTLSRPT.md example, every code, and rejections."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from app.tlsrpt.libtlsrpt import (
    BAD_JSON,
    INVALID_DOMAIN,
    INVALID_FIELD,
    INVALID_IP,
    UNKNOWN_CODE,
    UNKNOWN_POLICY_TYPE,
    UNSUPPORTED_VERSION,
    DatagramError,
    parse_datagram,
)
from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
from tests.collector.datagrams import (
    Expected,
    covering_datagrams,
    encode,
    random_datagram,
)

EXAMPLE = (
    b'{"dpv": "1","d": "example.org","pr": "v=TLSRPTv1; rua=mailto:tlsrpt@example.org",'
    b'"policies":[{"policy-type":2,"policy-domain": "example.org","policy-string":'
    b'["version: STSv1","mode: enforce","mx: mx1.example.org","max_age: 86400"],'
    b'"mx-host":["mx1.example.org"],"failure-details":[{"c":302,"s": "192.0.2.11",'
    b'"n": "mx1.example.org","h": "mx1.example.org","r": "198.51.100.21"}],"t":1,"f":1}]}'
)


def test_the_specification_example() -> None:
    datagram = parse_datagram(EXAMPLE)
    assert datagram.recipient_domain == "example.org"
    (result,) = datagram.results
    assert result.policy == Policy(
        policy_type=PolicyType.STS,
        policy_domain="example.org",
        policy_string=("version: STSv1", "mode: enforce", "mx: mx1.example.org", "max_age: 86400"),
        mx_host=("mx1.example.org",),
    )
    assert result.failed is True
    assert result.details == (
        FailureDetail(
            result_type=ResultType.STS_POLICY_INVALID,
            sending_mta_ip="192.0.2.11",
            receiving_mx_hostname="mx1.example.org",
            receiving_mx_helo="mx1.example.org",
            receiving_ip="198.51.100.21",
        ),
    )


def test_policy_without_domain_belongs_to_the_normalised_recipient_domain() -> None:
    data = b'{"dpv":"1","d":"B\xc3\xbccher.Example.","policies":[{"policy-type":9,"t":0,"f":0}]}'
    datagram = parse_datagram(data)
    assert datagram.recipient_domain == "xn--bcher-kva.example"
    assert datagram.results[0].policy.policy_domain == "xn--bcher-kva.example"
    assert datagram.results[0].policy.policy_type is PolicyType.NO_POLICY_FOUND
    assert datagram.results[0].failed is False


def test_tlsa_records_are_sorted_and_sts_lines_kept_in_order() -> None:
    tlsa = (
        b'{"d":"a.example","policies":[{"policy-type":1,'
        b'"policy-string":["3 1 1 BB","2 0 1 AA"],"t":0,"f":0}]}'
    )
    sts = (
        b'{"d":"a.example","policies":[{"policy-type":2,'
        b'"policy-string":["version: STSv1","mode: testing"],"t":0,"f":0}]}'
    )
    assert parse_datagram(tlsa).results[0].policy.policy_string == ("2 0 1 AA", "3 1 1 BB")
    assert parse_datagram(sts).results[0].policy.policy_string == (
        "version: STSv1",
        "mode: testing",
    )


def _counts(datagrams: list[bytes]) -> Expected:
    seen = Expected()
    for data in datagrams:
        for result in parse_datagram(data).results:
            p = result.policy
            key = (p.policy_type.value, p.policy_domain, p.policy_string, p.mx_host)
            seen.sessions[key] += 1
            seen.failures[key] += int(result.failed)
            for d in result.details:
                detail = (
                    d.result_type.value,
                    d.sending_mta_ip,
                    d.receiving_mx_hostname,
                    d.receiving_mx_helo,
                    d.receiving_ip,
                    d.additional_information,
                    d.failure_reason_code,
                )
                seen.details[(key, detail)] += 1
    return seen


def test_every_policy_type_and_result_code_is_counted_as_sent() -> None:
    specs = covering_datagrams()
    expected = Expected()
    for spec in specs:
        expected.add(spec)
    seen = _counts([encode(s) for s in specs])
    assert seen == expected
    assert {key[1][0] for key in seen.details} == {
        t.value for t in ResultType if t is not ResultType.SUCCESS
    }
    assert {key[0] for key in seen.sessions} == {"tlsa", "sts", "no-policy-found"}


def test_random_datagrams_with_unusual_characters_are_counted_as_sent() -> None:
    rng = random.Random(7)
    specs = [random_datagram(rng) for _ in range(2000)]
    expected = Expected()
    for spec in specs:
        expected.add(spec)
    assert _counts([encode(s) for s in specs]) == expected
    # The generator did exercise the hard cases.
    texts = Counter(d[1][5] for d in expected.details)
    assert "new line tab ctl" in texts
    assert any(t and '"' in t for t in texts)


@pytest.mark.parametrize(
    ("data", "kind", "where"),
    [
        (b"not json", BAD_JSON, ""),
        (b'{"d":"a.example","policies":[', BAD_JSON, ""),
        (b"\xff\xfe{}", BAD_JSON, ""),
        (b"[1,2]", BAD_JSON, ""),
        (b'{"dpv":"2","d":"a.example","policies":[]}', UNSUPPORTED_VERSION, "dpv"),
        (b'{"dpv":"1","policies":[{"policy-type":2,"f":0}]}', INVALID_FIELD, "d"),
        (b'{"d":"a.example","policies":[]}', INVALID_FIELD, "policies"),
        (b'{"d":"a.example","policies":[{"policy-type":2}]}', INVALID_FIELD, "policies[0].f"),
        (b'{"d":"a.example","policies":[{"policy-type":2,"f":2}]}', INVALID_FIELD, "policies[0].f"),
        (
            b'{"d":"a.example","policies":[{"policy-type":true,"f":0}]}',
            INVALID_FIELD,
            "policy-type",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":3,"f":0}]}',
            UNKNOWN_POLICY_TYPE,
            "policy-type",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"failure-details":[{"c":299}],"f":1}]}',
            UNKNOWN_CODE,
            "failure-details[0].c",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"failure-details":[{"c":201,"s":"1.2.3"}],"f":1}]}',
            INVALID_IP,
            "failure-details[0].s",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"failure-details":[{"c":201,"r":"mx.example"}],"f":1}]}',
            INVALID_IP,
            "failure-details[0].r",
        ),
        (b'{"d":"bad domain!","policies":[{"policy-type":2,"f":0}]}', INVALID_DOMAIN, "d"),
        (b'{"d":".","policies":[{"policy-type":2,"f":0}]}', INVALID_DOMAIN, "d"),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"mx-host":["mx .example"],"f":0}]}',
            INVALID_DOMAIN,
            "mx-host[0]",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"policy-string":[1],"f":0}]}',
            INVALID_FIELD,
            "policy-string",
        ),
        (
            b'{"d":"a.example","policies":[{"policy-type":2,"failure-details":{"c":201},"f":1}]}',
            INVALID_FIELD,
            "failure-details",
        ),
    ],
)
def test_invalid_datagrams_are_rejected_with_their_kind(data: bytes, kind: str, where: str) -> None:
    with pytest.raises(DatagramError) as info:
        parse_datagram(data)
    assert info.value.kind == kind
    assert where in str(info.value)


def test_datagram_without_version_is_read_as_version_one() -> None:
    data = b'{"d":"a.example","policies":[{"policy-type":2,"t":0,"f":0}]}'
    assert parse_datagram(data).results[0].policy.policy_domain == "a.example"


def test_free_text_is_made_acceptable_to_the_ingest_api_without_losing_the_session() -> None:
    data = (
        b'{"d":"a.example","policies":[{"policy-type":1,"mx-host":["mx.a.example"],'
        b'"failure-details":[{"c":203,"h":"line\\none","a":"\\u0000\\t",'
        b'"f":"' + b"x" * 5000 + b'"}],"t":1,"f":1}]}'
    )
    (result,) = parse_datagram(data).results
    assert result.policy.mx_host == ()
    (detail,) = result.details
    assert detail.receiving_mx_helo == "line one"
    assert detail.additional_information is None
    assert detail.failure_reason_code == "x" * 1024


def test_policies_beyond_the_ingest_limits_are_refused() -> None:
    lines = ",".join(f'"line {i}"' for i in range(257)).encode()
    data = (
        b'{"d":"a.example","policies":[{"policy-type":2,"policy-string":[' + lines + b'],"f":0}]}'
    )
    with pytest.raises(DatagramError) as info:
        parse_datagram(data)
    assert info.value.kind == INVALID_FIELD
