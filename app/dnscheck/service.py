"""The DNS check of a domain the operator receives mail for (`tlsrpt dns-check`,
`GET /v1/dns/check`, and the web page through `check_domain`).

For the domain: its MX hosts, each host's TLSA records at `_25._tcp.<host>` and whether
the resolver validated them (the AD bit), each host's own `_smtp._tls.<host>` record
(DANE reports go to the MX host, RFC 8460 §3 and RFC 7672); `_smtp._tls.<domain>` parsed
by the project's parser with each rua checked; MTA-STS (`mtasts.py`); with `probe`, a
STARTTLS connection to each MX host (`probe.py`); with `sending`, the DKIM key and From
alignment (`dkim.py`). A DNS failure (SERVFAIL, timeout, a lame server, a CNAME loop) is
"could not check", never "missing". Records to publish point at this service's own rua.
Nothing is written; no database is needed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Sequence
from typing import Protocol, TypeVar

import dns.rdata

from app.clock import Clock
from app.config import Settings
from app.delivery.https import HttpsPoster, refusal_reason
from app.dns.lookup import tlsrpt_name
from app.dns.resolver import DnsAnswer, TemporaryDnsError
from app.dnscheck.dkim import check_sending
from app.dnscheck.model import (
    DnsCheckResult,
    DomainCheck,
    Finding,
    MxHostCheck,
    Status,
    TlsrptCheck,
    could_not_check,
    worst,
)
from app.dnscheck.mtasts import HTTPS_PORT, check_mta_sts
from app.dnscheck.probe import SMTP_PORT, ProbeSettings, ProbeTarget, probe_host
from app.tlsrpt.dane import Tlsa
from app.tlsrpt.names import MAX_DOMAIN_CHARS, normalise_domain, unicode_domain
from app.tlsrpt.record import (
    RecordError,
    ReportUri,
    format_record,
    is_tlsrpt,
    parse_record,
    select_record,
    split_txt_strings,
)
from app.tlsrpt.report import submitter_domain

T = TypeVar("T")
# A hostile zone may list hundreds of MX hosts: each costs lookups (and a probe).
MAX_MX_HOSTS = 16


class CheckResolver(Protocol):
    """What the check asks DNS; `app.dns.resolver.DnsResolver` is the real one."""

    @property
    def nameservers(self) -> list[str]: ...

    async def lookup(self, name: str, rdtype: str) -> DnsAnswer: ...

    async def resolve_txt(self, name: str) -> list[tuple[bytes, ...]]: ...

    async def resolve_addresses(self, host: str) -> list[str]: ...


def own_rua(settings: Settings) -> list[str]:
    """This service's own rua, from TLSRPT_INBOUND__RUA_ADDRESS and TLSRPT_PUBLIC_URL with
    TLSRPT_INBOUND__RUA_TOKEN: where suggested records send reports."""
    rua = []
    if settings.inbound.rua_address:
        rua.append(f"mailto:{settings.inbound.rua_address}")
    if settings.public_url and settings.inbound.rua_token is not None:
        rua.append(
            f"{settings.public_url}/v1/tlsrpt/{settings.inbound.rua_token.get_secret_value()}"
        )
    return rua


def format_txt_line(name: str, value: str) -> str:
    """A zone-file TXT line, split into 255-octet strings (RFC 1035 §3.3)."""
    strings = " ".join(f'"{part}"' for part in split_txt_strings(value))
    return f"{name.rstrip('.')}. IN TXT {strings}"


async def check_domains(
    domains: Sequence[str],
    *,
    resolver: CheckResolver,
    settings: Settings,
    clock: Clock,
    probe: bool = False,
    sending: bool = False,
    smtp_port: int = SMTP_PORT,
    https_port: int = HTTPS_PORT,
) -> DnsCheckResult:
    """Check each domain (A-labels or U-labels; ValueError names a bad one)."""
    names = [normalise_domain(d) for d in domains]
    checks = await asyncio.gather(
        *(
            check_domain(
                name,
                resolver=resolver,
                settings=settings,
                clock=clock,
                probe=probe,
                sending=sending,
                smtp_port=smtp_port,
                https_port=https_port,
            )
            for name in dict.fromkeys(names)
        )
    )
    return DnsCheckResult(status=worst([c.status for c in checks]), domains=list(checks))


async def check_domain(
    domain: str,
    *,
    resolver: CheckResolver,
    settings: Settings,
    clock: Clock,
    probe: bool = False,
    sending: bool = False,
    smtp_port: int = SMTP_PORT,
    https_port: int = HTTPS_PORT,
) -> DomainCheck:
    """The whole check of one domain. `smtp_port` and `https_port` are for tests only
    (senders use 25 and 443)."""
    domain = normalise_domain(domain)
    rua = own_rua(settings)
    (findings, hosts), tlsrpt = await asyncio.gather(
        _mx_hosts(resolver, domain), check_tlsrpt(resolver, domain, rua)
    )
    # A DANE host's own record: to this service, else where the domain's reports go.
    host_rua = rua or _usable_rua(tlsrpt.record)
    mx_checks = await asyncio.gather(*(_check_host(resolver, h, p, host_rua) for h, p in hosts))
    https = settings.https.model_copy(update={"verify_certificates": True})
    poster = HttpsPoster(https, resolver)
    try:
        mta_sts = await check_mta_sts(
            domain,
            [h.host for h in mx_checks],
            resolver=resolver,
            poster=poster,
            dane=any(h.tlsa for h in mx_checks),
            port=https_port,
        )
    finally:
        await poster.aclose()
    if probe:
        options = ProbeSettings(
            helo=helo_name(settings),
            timeout=min(settings.smtp.timeout_seconds, 30.0),
            allowed=settings.https.allowed_networks,
            ca_file=str(settings.https.ca_file) if settings.https.ca_file else None,
            port=smtp_port,
        )
        probes = await asyncio.gather(
            *(
                probe_host(
                    ProbeTarget(h.host, h.addresses, _tlsa_of(h), mta_sts.mode), options, clock()
                )
                for h in mx_checks
                if h.addresses
            )
        )
        for host, found in zip([h for h in mx_checks if h.addresses], probes, strict=True):
            host.findings += found
    result = DomainCheck(
        domain=domain,
        domain_unicode=unicode_domain(domain),
        status=Status.OK,
        resolver=resolver.nameservers,
        findings=findings,
        mx_hosts=list(mx_checks),
        tlsrpt=tlsrpt,
        mta_sts=mta_sts,
        sending=await check_sending(settings, resolver) if sending else None,
    )
    result.status = worst([f.status for f in result.all_findings()])
    return result


def helo_name(settings: Settings) -> str:
    """The name this service greets SMTP servers with: the submitter domain."""
    try:
        return submitter_domain(settings.report.contact_info)
    except ValueError:
        return "localhost"


async def _mx_hosts(
    resolver: CheckResolver, domain: str
) -> tuple[list[Finding], list[tuple[str, int]]]:
    """The domain's MX hosts by preference, and findings about the MX set itself."""
    try:
        answer = await resolver.lookup(domain, "MX")
    except TemporaryDnsError as exc:
        return [could_not_check(domain, exc)], []
    hosts = sorted(
        {(_target(r), int(r.preference)) for r in answer.records},  # type: ignore[attr-defined]
        key=lambda item: (item[1], item[0]),
    )
    if any(host == "" for host, _ in hosts):
        # RFC 7505: "0 ." says the domain accepts no mail at all.
        return [
            Finding(
                status=Status.WARN,
                subject=domain,
                message="null MX: the domain accepts no mail (RFC 7505).",
            )
        ], []
    if hosts:
        findings, valid = [], []
        for host, preference in hosts:
            try:
                valid.append((normalise_domain(host), preference))
            except ValueError as exc:
                findings.append(
                    Finding(
                        status=Status.FAIL,
                        subject=domain,
                        message=f"MX host {host[:80]!r} is not a host name ({exc}): senders "
                        "can not deliver to it.",
                    )
                )
        if len(valid) > MAX_MX_HOSTS:
            findings.append(
                Finding(
                    status=Status.WARN,
                    subject=domain,
                    message=f"{len(valid)} MX hosts; only the first {MAX_MX_HOSTS} by "
                    "preference are checked.",
                )
            )
            valid = valid[:MAX_MX_HOSTS]
        names = ", ".join(h for h, _ in valid)
        findings.insert(
            0,
            Finding(status=Status.OK, subject=domain, message=f"{len(valid)} MX host(s): {names}."),
        )
        return findings, valid
    try:
        addresses = await resolver.resolve_addresses(domain)
    except TemporaryDnsError as exc:
        return [could_not_check(domain, exc)], []
    if not addresses:
        return [
            Finding(
                status=Status.FAIL,
                subject=domain,
                message="no MX record and no address: the domain receives no mail.",
            )
        ], []
    return [
        Finding(
            status=Status.WARN,
            subject=domain,
            message="no MX record: mail goes to the domain's own address (RFC 5321 §5.1); "
            "publish an MX record.",
        )
    ], [(domain, 0)]


def _target(rdata: dns.rdata.Rdata) -> str:
    return str(rdata.exchange.to_text()).lower().rstrip(".")  # type: ignore[attr-defined]


async def _check_host(
    resolver: CheckResolver, host: str, preference: int, rua: list[str]
) -> MxHostCheck:
    result = MxHostCheck(host=host, host_unicode=unicode_domain(host), preference=preference)
    name = f"_25._tcp.{host}"
    addresses, tlsa, record = await asyncio.gather(
        _try(resolver.resolve_addresses(host)),
        _try(resolver.lookup(name, "TLSA")),
        _try(resolver.resolve_txt(tlsrpt_name(host))),
    )
    if isinstance(addresses, TemporaryDnsError):
        result.findings.append(could_not_check(host, addresses))
    elif not addresses:
        result.findings.append(
            Finding(
                status=Status.FAIL, subject=host, message="the MX host has no address (A or AAAA)."
            )
        )
    else:
        result.addresses = addresses
    servers = ", ".join(resolver.nameservers)
    if isinstance(tlsa, TemporaryDnsError):
        result.findings.append(could_not_check(name, tlsa))
    else:
        result.tlsa = [r.to_text() for r in tlsa.records]
        result.tlsa_authenticated = tlsa.authenticated
        if result.tlsa and tlsa.authenticated:
            result.findings.append(
                Finding(
                    status=Status.OK,
                    subject=name,
                    message=f"DANE: {len(result.tlsa)} TLSA record(s), DNSSEC-validated "
                    f"(AD bit from {servers}).",
                )
            )
        elif result.tlsa:
            result.findings.append(
                Finding(
                    status=Status.WARN,
                    subject=name,
                    message=f"TLSA records found, but {servers} did not mark the answer "
                    "DNSSEC-validated (no AD bit): DANE senders ignore them unless the zone "
                    "is signed (RFC 7672 §2.2), or this resolver does not validate.",
                )
            )
    result.findings += _host_tlsrpt(result, record, rua)
    return result


def _host_tlsrpt(
    result: MxHostCheck, answer: list[tuple[bytes, ...]] | TemporaryDnsError, rua: list[str]
) -> list[Finding]:
    name = tlsrpt_name(result.host).rstrip(".")
    if len(name) > MAX_DOMAIN_CHARS:
        return [_too_long(name)] if result.tlsa else []
    if isinstance(answer, TemporaryDnsError):
        return [could_not_check(name, answer)]
    result.tlsrpt_record = _record_text(answer)
    try:
        select_record(answer)
    except RecordError as exc:
        if result.tlsrpt_record is None and not result.tlsa:
            return []  # without DANE, reports about this host go to the recipient domain
        if result.tlsrpt_record is None:
            return [
                Finding(
                    status=Status.WARN,
                    subject=name,
                    message="no TLSRPT record for this DANE host: DANE (tlsa) reports are sent "
                    "for the MX host, not the domain (RFC 8460 §3); publish one if you run it.",
                    suggestion=_suggest(name, rua),
                )
            ]
        return [
            Finding(
                status=Status.FAIL,
                subject=name,
                message=f"the TLSRPT record is not usable: {exc}.",
                suggestion=_suggest(name, rua),
            )
        ]
    return [Finding(status=Status.OK, subject=name, message="the host's TLSRPT record is valid.")]


async def check_tlsrpt(resolver: CheckResolver, domain: str, rua: list[str]) -> TlsrptCheck:
    """`_smtp._tls.<domain>` and each of its rua; a missing or broken record comes with
    one that sends reports to `rua` (this service's own)."""
    name = tlsrpt_name(domain).rstrip(".")
    result = TlsrptCheck()
    if len(name) > MAX_DOMAIN_CHARS:
        result.findings.append(_too_long(name))
        return result
    try:
        answer = await resolver.resolve_txt(name + ".")
    except TemporaryDnsError as exc:
        result.findings.append(could_not_check(name, exc))
        return result
    result.record = _record_text(answer)
    try:
        record = select_record(answer)
    except RecordError as exc:
        what = (
            "no TLSRPT record: senders send no reports"
            if result.record is None
            else (f"the TLSRPT record is not usable ({exc}): senders send no reports")
        )
        hint = (
            ""
            if rua
            else (
                "; set TLSRPT_INBOUND__RUA_ADDRESS, or TLSRPT_PUBLIC_URL and "
                "TLSRPT_INBOUND__RUA_TOKEN, to get a record pointing at this service"
            )
        )
        result.findings.append(
            Finding(
                status=Status.FAIL,
                subject=name,
                message=f"{what}{hint}.",
                suggestion=_suggest(name, rua),
            )
        )
        return result
    result.rua = [u.uri for u in record.rua]
    checks = await asyncio.gather(*(_check_rua(resolver, name, u, rua) for u in record.rua))
    result.findings += checks
    if not record.usable_rua:
        result.findings.append(
            Finding(
                status=Status.FAIL,
                subject=name,
                message="no rua is usable (mailto: or https:): senders send no reports.",
                suggestion=_suggest(name, rua),
            )
        )
    return result


async def _check_rua(
    resolver: CheckResolver, subject: str, uri: ReportUri, own: list[str]
) -> Finding:
    if not uri.usable:
        return Finding(
            status=Status.WARN, subject=subject, message=f"rua {uri.uri} is ignored: {uri.problem}."
        )
    ours = " (this service)" if uri.uri in own else ""
    if uri.kind == "mailto":
        domain = uri.uri.rpartition("@")[2]
        try:
            mx = await resolver.lookup(domain, "MX")
            if any(_target(r) == "" for r in mx.records):
                return Finding(
                    status=Status.FAIL,
                    subject=subject,
                    message=f"rua {uri.uri}: {domain} accepts no mail (null MX).",
                )
            if not mx.records and not await resolver.resolve_addresses(domain):
                return Finding(
                    status=Status.FAIL,
                    subject=subject,
                    message=f"rua {uri.uri}: {domain} has no MX record and no address.",
                )
        except TemporaryDnsError as exc:
            return could_not_check(subject, exc)
        return Finding(
            status=Status.OK,
            subject=subject,
            message=f"rua {uri.uri}{ours}: {domain} accepts mail.",
        )
    host = uri.uri.split("/")[2].rsplit(":", 1)[0] if not uri.uri.startswith("https://[") else ""
    try:
        addresses = await resolver.resolve_addresses(host) if host else []
    except TemporaryDnsError as exc:
        return could_not_check(subject, exc)
    public = [a for a in addresses if refusal_reason(ipaddress.ip_address(a), ()) is None]
    if not public:
        why = "has no address" if not addresses else "resolves to no public address"
        return Finding(
            status=Status.FAIL,
            subject=subject,
            message=f"rua {uri.uri}: {host or 'the host'} {why}.",
        )
    return Finding(
        status=Status.OK,
        subject=subject,
        message=f"rua {uri.uri}{ours}: {host} resolves to a public address.",
    )


def _too_long(name: str) -> Finding:
    return Finding(
        status=Status.FAIL,
        subject=name[:60] + "...",
        message=f"{name[:60]}... is {len(name)} characters, over the DNS limit of "
        f"{MAX_DOMAIN_CHARS}: no TLSRPT record can be published there.",
    )


def _suggest(name: str, rua: list[str]) -> str | None:
    if not rua:
        return None
    return format_txt_line(name, format_record(rua))


def _usable_rua(record: str | None) -> list[str]:
    """The usable rua of a published record's text ([] when none or not valid)."""
    if record is None:
        return []
    try:
        return [u.uri for u in parse_record(record).usable_rua]
    except RecordError:
        return []


def _record_text(answer: list[tuple[bytes, ...]]) -> str | None:
    texts = [b"".join(s).decode("utf-8", "replace") for s in answer]
    found = [t for t in texts if is_tlsrpt(t)]
    return "\n".join(found) if found else None


def _tlsa_of(host: MxHostCheck) -> list[Tlsa]:
    records = []
    for text in host.tlsa:
        usage, selector, mtype, data = text.split(maxsplit=3)
        records.append(
            Tlsa(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data.split())))
        )
    return records


async def _try(coroutine: Awaitable[T]) -> T | TemporaryDnsError:
    """The result, or the temporary DNS failure as a value (for gather)."""
    try:
        return await coroutine
    except TemporaryDnsError as exc:
        return exc
