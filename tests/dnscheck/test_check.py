"""`check_domain` against a loopback DNS server serving test zones (the AD bit from a
validating-resolver stand-in: see zone_server.py), MTA-STS policies from a loopback HTTPS
server with a test CA, and aiosmtpd with STARTTLS for the probe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.dns.resolver import DnsResolver
from app.dnscheck.model import DomainCheck, Finding, Status
from app.dnscheck.service import check_domain, check_domains
from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa, make_test_ca
from tests.delivery.sinks import SmtpHandler, smtp_sink
from tests.dnscheck.conftest import PolicyServer, check_settings, spki_sha256
from tests.dnscheck.zone_server import ZoneData, absolute, zone_server

PUBLIC = "93.184.215.14"  # a public address in answers; nothing connects to it
MX_IDN = "mx-ä.bücher.test".encode("idna").decode("ascii")


def make_zone(ca: LoopbackCa) -> ZoneData:
    records = absolute(
        {
            ("good.test", "MX"): ["10 mx1.good.test.", "20 mx2.good.test."],
            ("mx1.good.test", "A"): ["127.0.0.1"],
            ("mx2.good.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx1.good.test", "TLSA"): [f"3 1 1 {spki_sha256(ca)}"],
            ("_smtp._tls.mx1.good.test", "TXT"): ['"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"'],
            ("_smtp._tls.good.test", "TXT"): [
                '"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,"'
                ' "https://rua.reports.test/v1/tlsrpt/x"',
                '"v=spf1 -all"',
            ],
            ("_mta-sts.good.test", "TXT"): ['"v=STSv1; id=20261204;"'],
            ("mta-sts.good.test", "A"): ["127.0.0.1"],
            ("reports.test", "MX"): ["10 mx.reports.test."],
            ("rua.reports.test", "A"): [PUBLIC],
            # bad.test: unsigned TLSA, no TLSRPT records, a policy that misses its MX
            ("bad.test", "MX"): ["10 mx.bad.test."],
            ("mx.bad.test", "A"): ["127.0.0.1"],
            ("_25._tcp.mx.bad.test", "TLSA"): ["3 1 1 " + "00" * 32],
            ("_mta-sts.bad.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.bad.test", "A"): ["127.0.0.1"],
            # an https rua on a private address, a mailto rua to a domain with null MX
            ("privrua.test", "MX"): ["10 mx.privrua.test."],
            ("mx.privrua.test", "A"): [PUBLIC],
            ("_smtp._tls.privrua.test", "TXT"): [
                '"v=TLSRPTv1; rua=https://r.privrua.test/x,mailto:a@nomail.test"'
            ],
            ("r.privrua.test", "A"): ["10.1.2.3"],
            ("nomail.test", "MX"): ["0 ."],
            # the MTA-STS host on a private address: never fetched
            ("ssrf.test", "MX"): ["10 mx.ssrf.test."],
            ("mx.ssrf.test", "A"): [PUBLIC],
            ("_mta-sts.ssrf.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.ssrf.test", "A"): ["10.0.0.1"],
            # MTA-STS servers that break RFC 8461 §3.3
            ("redirect.test", "MX"): ["10 mx1.good.test."],
            ("_mta-sts.redirect.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.redirect.test", "A"): ["127.0.0.1"],
            ("html.test", "MX"): ["10 mx1.good.test."],
            ("_mta-sts.html.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.html.test", "A"): ["127.0.0.1"],
            ("big.test", "MX"): ["10 mx1.good.test."],
            ("_mta-sts.big.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.big.test", "A"): ["127.0.0.1"],
            # a certificate that does not name the host
            ("wrongcert.test", "MX"): ["10 mx1.good.test."],
            ("_mta-sts.wrongcert.test", "TXT"): ['"v=STSv1; id=1;"'],
            ("mta-sts.wrongcert.test", "A"): ["127.0.0.1"],
            # hostile and broken DNS
            ("loop.test", "CNAME"): ["loop2.test."],
            ("loop2.test", "CNAME"): ["loop.test."],
            ("chain.test", "CNAME"): ["chain2.test."],
            ("chain2.test", "MX"): ["10 mx1.good.test."],
            ("xn--bcher-kva.test", "MX"): [f"10 {MX_IDN}."],
            (MX_IDN, "A"): [PUBLIC],
            ("implicit.test", "A"): [PUBLIC],
            ("null.test", "MX"): ["0 ."],
            ("many.test", "MX"): [f"{n} mx{n}.many.test." for n in range(40)]
            + ["5 bad\\032name.many.test."],
        }
    )
    secure = {"_25._tcp.mx1.good.test."}
    return ZoneData(records, secure=secure)


@pytest.fixture
def zone(mx_ca: LoopbackCa) -> Iterator[tuple[ZoneData, int]]:
    data = make_zone(mx_ca)
    with zone_server(data) as port:
        yield data, port


async def run(
    domain: str,
    zone: tuple[ZoneData, int],
    ca: LoopbackCa,
    https_port: int = 443,
    **options: object,
) -> DomainCheck:
    settings = check_settings(zone[1], ca)
    clock = FakeClock(datetime.now(UTC))
    return await check_domain(
        domain,
        resolver=DnsResolver(settings.dns),
        settings=settings,
        clock=clock,
        https_port=https_port,
        **options,  # type: ignore[arg-type]
    )


def by_subject(findings: list[Finding], subject: str) -> list[Finding]:
    return [f for f in findings if f.subject == subject]


async def test_a_well_set_up_domain_is_all_good(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa, policy_server: tuple[PolicyServer, int]
) -> None:
    server, port = policy_server
    handler = SmtpHandler()
    async with smtp_sink(handler, tls_context=mx_ca.server_context()) as smtp_port:
        check = await run(
            "Good.Test.", zone, mx_ca, https_port=port, probe=True, smtp_port=smtp_port
        )
    bad = [f for f in check.all_findings() if f.status is not Status.OK]
    assert bad == []
    assert check.status is Status.OK
    assert check.resolver == [f"127.0.0.1:{zone[1]}"]
    mx1, mx2 = check.mx_hosts
    assert (mx1.host, mx1.preference, mx2.host) == ("mx1.good.test", 10, "mx2.good.test")
    assert mx1.tlsa_authenticated is True and mx1.tlsa == [f"3 1 1 {spki_sha256(mx_ca)}"]
    assert mx2.tlsa == [] and mx2.tlsa_authenticated is False
    assert "DNSSEC-validated" in by_subject(mx1.findings, "_25._tcp.mx1.good.test")[0].message
    assert any("matches a TLSA record" in f.message for f in mx1.findings)
    assert any("trusted and valid for its name" in f.message for f in mx2.findings)
    assert check.tlsrpt.rua == [
        "mailto:tlsrpt@reports.test",
        "https://rua.reports.test/v1/tlsrpt/x",
    ]
    assert any("(this service)" in f.message for f in check.tlsrpt.findings)
    sts = check.mta_sts
    assert (sts.mode, sts.max_age, sts.mx, sts.policy_id) == (
        "enforce",
        604800,
        ["*.good.test"],
        "20261204",
    )
    assert server.requests == ["GET mta-sts.good.test/.well-known/mta-sts.txt"]
    # The AD bit was asked for: the query of the TLSA name carried it.
    assert "_25._tcp.mx1.good.test. TLSA" in zone[0].queries


async def test_missing_records_come_with_the_lines_to_publish(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa, policy_server: tuple[PolicyServer, int]
) -> None:
    server, port = policy_server
    server.policies["mta-sts.bad.test"] = (
        200,
        "text/plain",
        b"version: STSv1\nmode: testing\nmx: mx.other.test\nmax_age: 3600\n",
    )
    check = await run("bad.test", zone, mx_ca, https_port=port)
    assert check.status is Status.FAIL
    own = 'rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test/v1/tlsrpt/tok123"'
    [missing] = check.tlsrpt.findings
    assert missing.status is Status.FAIL
    assert missing.message.startswith("no TLSRPT record")
    assert missing.suggestion == f'_smtp._tls.bad.test. IN TXT "v=TLSRPTv1; {own}'
    [host] = check.mx_hosts
    assert host.tlsa_authenticated is False
    unsigned = by_subject(host.findings, "_25._tcp.mx.bad.test")[0]
    assert unsigned.status is Status.WARN and "no AD bit" in unsigned.message
    per_host = by_subject(host.findings, "_smtp._tls.mx.bad.test")[0]
    assert per_host.status is Status.WARN
    assert per_host.suggestion == f'_smtp._tls.mx.bad.test. IN TXT "v=TLSRPTv1; {own}'
    statuses = {f.message.split(":")[0]: f.status for f in check.mta_sts.findings}
    assert statuses["policy mode testing"] is Status.WARN
    assert any("under a day" in f.message for f in check.mta_sts.findings)
    unmatched = by_subject(check.mta_sts.findings, "mx.bad.test")[0]
    assert unmatched.status is Status.WARN  # testing mode: reported, still delivered
    assert "matched by no mx pattern" in unmatched.message


async def test_without_an_own_rua_a_dane_host_is_told_the_domains_rua(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    from app.config import InboundSettings

    records = zone[0].records
    records["_smtp._tls.bad.test.", "TXT"] = ['"v=TLSRPTv1; rua=mailto:r@reports.test"']
    settings = check_settings(zone[1], mx_ca, public_url=None, inbound=InboundSettings())
    check = await check_domain(
        "bad.test", resolver=DnsResolver(settings.dns), settings=settings, clock=FakeClock()
    )
    per_host = by_subject(check.mx_hosts[0].findings, "_smtp._tls.mx.bad.test")[0]
    assert per_host.suggestion == (
        '_smtp._tls.mx.bad.test. IN TXT "v=TLSRPTv1; rua=mailto:r@reports.test"'
    )
    del records["_smtp._tls.bad.test.", "TXT"]
    check = await check_domain(
        "bad.test", resolver=DnsResolver(settings.dns), settings=settings, clock=FakeClock()
    )
    [missing] = check.tlsrpt.findings
    assert missing.suggestion is None
    assert "set TLSRPT_INBOUND__RUA_ADDRESS, or TLSRPT_PUBLIC_URL and" in missing.message


async def test_rua_destinations_are_checked(zone: tuple[ZoneData, int], mx_ca: LoopbackCa) -> None:
    check = await run("privrua.test", zone, mx_ca)
    messages = {f.message: f.status for f in check.tlsrpt.findings}
    assert messages == {
        "rua https://r.privrua.test/x: r.privrua.test resolves to no public address.": Status.FAIL,
        "rua mailto:a@nomail.test: nomail.test accepts no mail (null MX).": Status.FAIL,
    }


async def test_mta_sts_host_on_a_private_address_is_not_fetched(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa, policy_server: tuple[PolicyServer, int]
) -> None:
    server, port = policy_server
    check = await run("ssrf.test", zone, mx_ca, https_port=port)
    [finding] = check.mta_sts.findings
    assert finding.status is Status.FAIL
    assert (
        "refused by the SSRF guard" in finding.message and "10.0.0.1 (private)" in finding.message
    )
    assert server.requests == []


@pytest.mark.parametrize(
    ("domain", "answer", "problem"),
    [
        ("redirect.test", (302, "text/plain", b""), "redirects (HTTP 302)"),
        ("html.test", (200, "text/html", b"<html>"), "media type is 'text/html'"),
        ("big.test", (200, "text/plain", b"x" * (64 * 1024 + 1)), "larger than 65536 bytes"),
        ("html.test", (200, "text/plain", b"version: STSv1\nmode: sure\n"), "mode is 'sure'"),
    ],
)
async def test_policy_servers_that_break_rfc_8461(
    zone: tuple[ZoneData, int],
    mx_ca: LoopbackCa,
    policy_server: tuple[PolicyServer, int],
    domain: str,
    answer: tuple[int, str, bytes],
    problem: str,
) -> None:
    server, port = policy_server
    server.policies[f"mta-sts.{domain}"] = answer
    check = await run(domain, zone, mx_ca, https_port=port)
    [finding] = check.mta_sts.findings
    assert finding.status is Status.FAIL
    assert problem in finding.message
    assert check.mta_sts.mode is None


async def test_policy_host_certificate_must_name_it(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa, policy_server: tuple[PolicyServer, int]
) -> None:
    server, port = policy_server
    server.policies["mta-sts.wrongcert.test"] = (200, "text/plain", b"version: STSv1\n")
    check = await run("wrongcert.test", zone, mx_ca, https_port=port)
    [finding] = check.mta_sts.findings
    assert finding.status is Status.FAIL
    assert "could not be fetched" in finding.message
    assert "mta-sts.wrongcert.test" in finding.message
    assert server.requests == []  # the TLS handshake failed before any request


@pytest.mark.parametrize("domain", ["servfail.test", "lame.test", "silent.test"])
async def test_broken_dns_is_could_not_check_never_missing(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa, domain: str
) -> None:
    check = await run(domain, zone, mx_ca)
    assert check.status is Status.UNKNOWN
    findings = check.all_findings()
    assert findings and all(f.status is Status.UNKNOWN for f in findings)
    assert not any("no " in f.message.split(":")[0] for f in findings)
    assert all(f.suggestion is None for f in findings)


async def test_cname_chains_are_followed_and_loops_could_not_check(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    check = await run("chain.test", zone, mx_ca)
    assert [h.host for h in check.mx_hosts] == ["mx1.good.test"]
    loop = await run("loop.test", zone, mx_ca)
    [finding] = loop.findings
    assert finding.status is Status.UNKNOWN
    assert finding.message.startswith("could not check: ")
    assert "CNAME chain is too long" in finding.message
    assert loop.mx_hosts == []


async def test_idn_in_a_labels_with_u_labels_beside(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    check = await run("bücher.test", zone, mx_ca)
    assert (check.domain, check.domain_unicode) == ("xn--bcher-kva.test", "bücher.test")
    [host] = check.mx_hosts
    assert (host.host, host.host_unicode) == (MX_IDN, "mx-ä.bücher.test")
    assert host.host.startswith("xn--") and host.host.isascii()
    assert "_smtp._tls.xn--bcher-kva.test. TXT" in zone[0].queries


async def test_implicit_and_null_mx(zone: tuple[ZoneData, int], mx_ca: LoopbackCa) -> None:
    implicit = await run("implicit.test", zone, mx_ca)
    assert implicit.findings[0].status is Status.WARN
    assert "RFC 5321 §5.1" in implicit.findings[0].message
    assert [h.host for h in implicit.mx_hosts] == ["implicit.test"]
    null = await run("null.test", zone, mx_ca)
    assert "null MX" in null.findings[0].message and null.mx_hosts == []


async def test_hostile_mx_sets(zone: tuple[ZoneData, int], mx_ca: LoopbackCa) -> None:
    check = await run("many.test", zone, mx_ca)
    assert len(check.mx_hosts) == 16
    assert [h.host for h in check.mx_hosts[:2]] == ["mx0.many.test", "mx1.many.test"]
    messages = [f.message for f in check.findings]
    assert messages[0].startswith("16 MX host(s): mx0.many.test, mx1.many.test,")
    assert any("'bad\\\\032name.many.test' is not a host name" in m for m in messages)
    assert "40 MX hosts; only the first 16 by preference are checked." in messages


async def test_names_up_to_the_dns_limits(zone: tuple[ZoneData, int], mx_ca: LoopbackCa) -> None:
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 56, "test"])
    assert len(longest) == 253
    check = await run(longest, zone, mx_ca)
    assert check.domain == longest
    assert check.findings[0].message.startswith("no MX record and no address")
    # _smtp._tls.<longest> can not exist: said so, with nothing to paste.
    [tlsrpt] = check.tlsrpt.findings
    assert "over the DNS limit of 253" in tlsrpt.message and tlsrpt.suggestion is None
    with pytest.raises(ValueError, match="longer than 253"):
        await run(longest[:-4] + "ab.test", zone, mx_ca)
    with pytest.raises(ValueError, match="invalid label"):
        await run("a" * 64 + ".test", zone, mx_ca)


async def test_lookups_go_only_to_the_configured_nameserver(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    settings = check_settings(zone[1], mx_ca)
    result = await check_domains(
        ["null.test", "implicit.test"],
        resolver=DnsResolver(settings.dns),
        settings=settings,
        clock=FakeClock(),
    )
    assert [d.domain for d in result.domains] == ["null.test", "implicit.test"]
    assert "null.test. MX" in zone[0].queries and "implicit.test. MX" in zone[0].queries
    assert result.exit_code == 1  # no TLSRPT records


async def test_probe_without_starttls_and_with_an_expiring_certificate(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    async with smtp_sink(SmtpHandler()) as plain_port:  # offers no STARTTLS
        check = await run("bad.test", zone, mx_ca, probe=True, smtp_port=plain_port)
    [host] = check.mx_hosts
    refused = [f for f in host.findings if "does not offer STARTTLS" in f.message]
    assert refused and refused[0].status is Status.FAIL
    # The CA's certificate expires in 90 days: 80 days on, it is a warning.
    settings = check_settings(zone[1], mx_ca)
    later = FakeClock(datetime.now(UTC) + timedelta(days=80))
    async with smtp_sink(SmtpHandler(), tls_context=mx_ca.server_context()) as tls_port:
        check = await check_domain(
            "good.test",
            resolver=DnsResolver(settings.dns),
            settings=settings,
            clock=later,
            probe=True,
            smtp_port=tls_port,
        )
    expiring = [f for f in check.mx_hosts[0].findings if "expires in" in f.message]
    assert expiring and expiring[0].status is Status.WARN


async def test_probe_of_a_closed_port_could_not_check(
    zone: tuple[ZoneData, int], mx_ca: LoopbackCa
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening
        check = await run("bad.test", zone, mx_ca, probe=True, smtp_port=closed)
    probe = [f for f in check.mx_hosts[0].findings if "could not probe" in f.message]
    assert probe and probe[0].status is Status.UNKNOWN


async def test_probe_judges_the_certificate_as_mta_sts_and_dane_senders_do(
    zone: tuple[ZoneData, int],
    mx_ca: LoopbackCa,
    policy_server: tuple[PolicyServer, int],
    tmp_path: Path,
) -> None:
    _, https_port = policy_server
    stranger = make_test_ca(tmp_path, ("other.test",), valid_days=90)
    async with smtp_sink(SmtpHandler(), tls_context=stranger.server_context()) as port:
        check = await run(
            "good.test", zone, mx_ca, https_port=https_port, probe=True, smtp_port=port
        )
    mx1 = check.mx_hosts[0]
    untrusted = [f for f in mx1.findings if "does not verify" in f.message]
    assert untrusted and untrusted[0].status is Status.FAIL  # the policy is enforce
    mismatch = [f for f in mx1.findings if "matches none of its TLSA records" in f.message]
    assert mismatch and mismatch[0].status is Status.FAIL

    async with smtp_sink(SmtpHandler(), tls_context=mx_ca.server_context()) as port:
        dane = await run("bad.test", zone, mx_ca, probe=True, smtp_port=port)
        settings = check_settings(zone[1], mx_ca)
        expired = await check_domain(
            "good.test",
            resolver=DnsResolver(settings.dns),
            settings=settings,
            clock=FakeClock(datetime.now(UTC) + timedelta(days=91)),
            probe=True,
            smtp_port=port,
        )
    [host] = dane.mx_hosts  # trusted, but its TLSA record names another key
    assert [
        f.status for f in host.findings if "TLSA records" in f.message and "matches" in f.message
    ] == [Status.FAIL]
    assert any(
        f.status is Status.FAIL and "has expired" in f.message for f in expired.mx_hosts[0].findings
    )
