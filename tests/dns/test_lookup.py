"""`lookup_tlsrpt` outcomes through a fake resolver (RFC 8460 §3)."""

from __future__ import annotations

import pytest

from app.dns.lookup import (
    MultipleRecordsError,
    NoRecordError,
    RecordSyntaxError,
    TemporaryDnsError,
    lookup_many,
    lookup_tlsrpt,
    tlsrpt_name,
)
from app.tlsrpt.record import TlsrptRecord
from tests.dns.fake_resolver import FakeResolver


async def test_record_found_under_smtp_tls_name() -> None:
    resolver = FakeResolver()
    resolver.publish("example.com", "v=spf1 -all", "v=TLSRPTv1; rua=mailto:rpt@example.com")
    record = await lookup_tlsrpt(resolver, "Example.COM.")
    assert [u.uri for u in record.usable_rua] == ["mailto:rpt@example.com"]
    assert resolver.queries == ["_smtp._tls.example.com."]


async def test_idna_domain_is_asked_as_a_label() -> None:
    resolver = FakeResolver()
    resolver.publish("xn--bcher-kva.example", "v=TLSRPTv1; rua=https://r.example/")
    await lookup_tlsrpt(resolver, "bücher.example")
    assert resolver.queries == ["_smtp._tls.xn--bcher-kva.example."]
    assert tlsrpt_name("BÜCHER.example") == "_smtp._tls.xn--bcher-kva.example."


async def test_outcomes() -> None:
    resolver = FakeResolver()
    resolver.publish("none.example", "v=spf1 -all", "v=TLSRPTv10; rua=mailto:a@none.example")
    resolver.publish(
        "two.example", "v=TLSRPTv1; rua=mailto:a@two.example", "v=TLSRPTv1; rua=mailto:b@x.y"
    )
    resolver.publish("bad.example", "v=TLSRPTv1; rua=two.example")
    resolver.fail("flaky.example", TemporaryDnsError("SERVFAIL"))
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "nxdomain.example")
    with pytest.raises(NoRecordError):
        await lookup_tlsrpt(resolver, "none.example")
    with pytest.raises(MultipleRecordsError):
        await lookup_tlsrpt(resolver, "two.example")
    with pytest.raises(RecordSyntaxError, match="no scheme"):
        await lookup_tlsrpt(resolver, "bad.example")
    with pytest.raises(TemporaryDnsError):
        await lookup_tlsrpt(resolver, "flaky.example")


async def test_lookup_many_maps_each_domain_to_its_outcome() -> None:
    resolver = FakeResolver()
    resolver.publish("a.example", "v=TLSRPTv1; rua=mailto:r@a.example")
    resolver.fail("b.example", TemporaryDnsError("timed out"))
    outcomes = await lookup_many(resolver, ["a.example", "b.example", "c.example", "a.example"])
    assert list(outcomes) == ["a.example", "b.example", "c.example"]
    assert isinstance(outcomes["a.example"], TlsrptRecord)
    assert isinstance(outcomes["b.example"], TemporaryDnsError)
    assert isinstance(outcomes["c.example"], NoRecordError)
