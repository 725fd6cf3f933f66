"""`tlsrpt doctor`: the configuration checked end to end, without sending a report.

Database reachable and migrated; the sending switch; the relay (connect, EHLO, STARTTLS
or implicit TLS as configured, AUTH when configured: the same steps, and the same
sentences, as a delivery); the DKIM key readable, published and aligned with the From;
this service's own rua (the inbound token active) and, for domains named, whether their
published `_smtp._tls` record sends reports here. Each check is one finding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel

from app.config import Settings
from app.db.migrate import current_heads
from app.db.pool import Pool, open_pool
from app.delivery.errors import DeliveryError
from app.delivery.smtp import SmtpRelay
from app.dnscheck.dkim import check_sending
from app.dnscheck.model import Finding, Status, worst
from app.dnscheck.service import CheckResolver, check_tlsrpt, helo_name, own_rua
from app.tokens.service import Authenticator, Scope


class DoctorResult(BaseModel):
    status: Status
    findings: list[Finding]


async def run_doctor(
    settings: Settings,
    *,
    database_url: str,
    expected_heads: frozenset[str],
    resolver: CheckResolver,
    domains: Sequence[str] = (),
) -> DoctorResult:
    findings: list[Finding] = []
    pool = await _database(settings, database_url, expected_heads, findings)
    try:
        findings.append(_switch(settings))
        findings.append(await check_relay(settings))
        findings += await check_sending(settings, resolver)
        findings += await _own_rua(settings, pool)
        for domain in domains:
            findings += await _published_rua(settings, resolver, domain)
    finally:
        if pool is not None:
            await pool.close()
    return DoctorResult(status=worst([f.status for f in findings]), findings=findings)


async def _database(
    settings: Settings, url: str, expected: frozenset[str], findings: list[Finding]
) -> Pool | None:
    subject = "database"
    options = settings.database.model_copy(update={"pool_min_size": 1, "pool_max_size": 2})
    try:
        pool = await open_pool(url, options)
        async with asyncio.timeout(settings.database.connect_timeout_seconds):
            async with pool.connection() as conn:
                heads = await current_heads(conn)
    except Exception as exc:  # any failure to reach the database is the finding
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        findings.append(
            Finding(status=Status.FAIL, subject=subject, message=f"unreachable: {reason}.")
        )
        return None
    if heads != expected:
        findings.append(
            Finding(
                status=Status.FAIL,
                subject=subject,
                message="reachable, but the schema is not at the expected revision: run "
                "`tlsrpt migrate`.",
            )
        )
    else:
        findings.append(
            Finding(status=Status.OK, subject=subject, message="reachable and migrated.")
        )
    return pool


def _switch(settings: Settings) -> Finding:
    if settings.send_reports:
        return Finding(status=Status.OK, subject="TLSRPT_SEND_REPORTS", message="reports are sent.")
    return Finding(
        status=Status.WARN,
        subject="TLSRPT_SEND_REPORTS",
        message="false: reports are built and can be previewed, but none is sent.",
    )


async def check_relay(settings: Settings) -> Finding:
    """The relay as a delivery meets it: one connection, EHLO, TLS, AUTH, QUIT."""
    relay = SmtpRelay(settings.smtp, helo_name=helo_name(settings))
    try:
        done = await relay.check()
    except DeliveryError as exc:
        detail = f" ({exc.excerpt})" if exc.excerpt else ""
        return Finding(
            status=Status.FAIL, subject="TLSRPT_SMTP__HOST", message=f"{exc.reason}{detail}."
        )
    return Finding(status=Status.OK, subject="TLSRPT_SMTP__HOST", message=f"relay: {done}.")


async def _own_rua(settings: Settings, pool: Pool | None) -> list[Finding]:
    rua = own_rua(settings)
    findings = []
    if not rua:
        findings.append(
            Finding(
                status=Status.WARN,
                subject="TLSRPT_INBOUND__RUA_ADDRESS",
                message="no rua of this service is configured (TLSRPT_INBOUND__RUA_ADDRESS, or "
                "TLSRPT_PUBLIC_URL with TLSRPT_INBOUND__RUA_TOKEN): `tlsrpt dns-check` can not "
                "suggest records that send reports here.",
            )
        )
    token = settings.inbound.rua_token
    if token is not None:
        subject = "TLSRPT_INBOUND__RUA_TOKEN"
        if pool is None:
            findings.append(
                Finding(
                    status=Status.UNKNOWN,
                    subject=subject,
                    message="could not check the token: the database is unreachable.",
                )
            )
        else:
            scopes = await Authenticator(pool).scopes(token.get_secret_value())
            if scopes is None or Scope.INBOUND.value not in scopes:
                findings.append(
                    Finding(
                        status=Status.FAIL,
                        subject=subject,
                        message="not an active token with the inbound scope: reports posted "
                        "to the rua get 404; create one with `tlsrpt token create --scope "
                        "inbound`.",
                    )
                )
            else:
                findings.append(
                    Finding(
                        status=Status.OK,
                        subject=subject,
                        message="an active token with the inbound scope.",
                    )
                )
        if settings.public_url is None:
            findings.append(
                Finding(
                    status=Status.WARN,
                    subject="TLSRPT_PUBLIC_URL",
                    message="unset: the https rua of this service can not be named.",
                )
            )
    return findings


async def _published_rua(settings: Settings, resolver: CheckResolver, domain: str) -> list[Finding]:
    rua = own_rua(settings)
    check = await check_tlsrpt(resolver, domain, rua)
    findings = list(check.findings)
    ours = set(rua)
    if ours and check.rua and not ours & set(check.rua):
        findings.append(
            Finding(
                status=Status.WARN,
                subject=f"_smtp._tls.{domain}",
                message="the published record sends no reports to this service "
                f"({', '.join(sorted(ours))}).",
            )
        )
    return findings
