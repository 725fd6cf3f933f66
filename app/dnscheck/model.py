"""What a DNS check finds: the result model shared by the CLI, the API and the web page.

Every finding is `ok`, `warn`, `fail` or `unknown` (could not check: a DNS timeout,
SERVFAIL, a lame server; never reported as "missing") with the reason in one sentence,
and, where something should be published, a zone-file line ready to paste. Names are
A-labels; the U-label form stands beside them where it differs.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"


# How bad a status is, for the overall verdict: a failure outweighs "could not check".
_RANK = {Status.OK: 0, Status.WARN: 1, Status.UNKNOWN: 2, Status.FAIL: 3}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


class Finding(BaseModel):
    status: Status
    subject: str = Field(description="The DNS name, host or setting the finding is about.")
    message: str = Field(description="The reason, in one sentence.")
    suggestion: str | None = Field(
        default=None, description="A zone-file line to publish, ready to paste."
    )


def could_not_check(subject: str, exc: Exception) -> Finding:
    """A DNS failure (timeout, SERVFAIL, lame server): `unknown`, never "missing"."""
    reason = str(exc)
    for prefix in (subject + ": ", subject + ".: "):
        reason = reason.removeprefix(prefix)
    return Finding(status=Status.UNKNOWN, subject=subject, message=f"could not check: {reason}.")


class MxHostCheck(BaseModel):
    host: str = Field(description="The MX host, A-labels.")
    host_unicode: str | None = Field(default=None, description="U-labels, when different.")
    preference: int
    addresses: list[str] = Field(default_factory=list)
    tlsa: list[str] = Field(
        default_factory=list, description="TLSA records at `_25._tcp.<host>`, as text."
    )
    tlsa_authenticated: bool | None = Field(
        default=None,
        description="Whether the resolver set the AD bit (DNSSEC-validated) on the TLSA "
        "answer; null when the lookup failed.",
    )
    tlsrpt_record: str | None = Field(
        default=None, description="The host's own `_smtp._tls.<host>` record (DANE reports)."
    )
    findings: list[Finding] = Field(default_factory=list)


class TlsrptCheck(BaseModel):
    record: str | None = Field(default=None, description="`_smtp._tls.<domain>` as published.")
    rua: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)


class MtaStsCheck(BaseModel):
    record: str | None = Field(default=None, description="`_mta-sts.<domain>` as published.")
    policy_id: str | None = None
    mode: str | None = Field(default=None, description="`enforce`, `testing` or `none`.")
    max_age: int | None = None
    mx: list[str] = Field(default_factory=list, description="The policy's `mx` patterns.")
    findings: list[Finding] = Field(default_factory=list)


class DomainCheck(BaseModel):
    domain: str = Field(description="A-labels.")
    domain_unicode: str | None = Field(default=None, description="U-labels, when different.")
    status: Status = Field(description="The worst status of all findings.")
    resolver: list[str] = Field(description="The nameservers asked.")
    findings: list[Finding] = Field(
        default_factory=list, description="About the domain itself (its MX lookup)."
    )
    mx_hosts: list[MxHostCheck] = Field(default_factory=list)
    tlsrpt: TlsrptCheck
    mta_sts: MtaStsCheck
    sending: list[Finding] | None = Field(
        default=None, description="The sending side (DKIM key, From alignment), when asked."
    )

    def all_findings(self) -> list[Finding]:
        found = [*self.findings, *self.tlsrpt.findings, *self.mta_sts.findings]
        for host in self.mx_hosts:
            found += host.findings
        return found + (self.sending or [])


class DnsCheckResult(BaseModel):
    status: Status = Field(description="The worst status over all domains.")
    domains: list[DomainCheck]

    @property
    def exit_code(self) -> int:
        return exit_status(self.status)


def exit_status(status: Status) -> int:
    """0 all good (warnings allowed), 1 something fails, 2 could not check."""
    if status is Status.FAIL:
        return 1
    if status is Status.UNKNOWN:
        return 2
    return 0
