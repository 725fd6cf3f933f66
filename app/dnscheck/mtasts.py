"""The MTA-STS part of the DNS check (RFC 8461): the `_mta-sts` record, the policy
fetched as §3.3 says, and whether every MX host is matched by one of its patterns.

The policy is fetched with the HTTPS poster's `fetch`: the host is resolved with the
service's resolver and a private, loopback or otherwise non-public address is refused
(the SSRF guard of HTTPS delivery), the certificate must verify, redirects are not
followed, the media type must be text/plain and the body at most 64 KiB.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.delivery.errors import DeliveryError
from app.delivery.https import HttpsPoster
from app.dns.resolver import TemporaryDnsError, TxtResolver
from app.dnscheck.model import Finding, MtaStsCheck, Status, could_not_check
from app.tlsrpt.mtasts import (
    MAX_POLICY_BYTES,
    StsSyntaxError,
    mx_matches,
    parse_policy,
    select_sts_record,
)

# RFC 8461 §3.2 suggests a max_age of weeks; under a day a policy barely protects.
SHORT_MAX_AGE = 86400
HTTPS_PORT = 443


def policy_url(domain: str, port: int = HTTPS_PORT) -> str:
    """RFC 8461 §3.3: `https://mta-sts.<domain>/.well-known/mta-sts.txt`."""
    netloc = f"mta-sts.{domain}" if port == HTTPS_PORT else f"mta-sts.{domain}:{port}"
    return f"https://{netloc}/.well-known/mta-sts.txt"


async def check_mta_sts(
    domain: str,
    mx_hosts: Sequence[str],
    *,
    resolver: TxtResolver,
    poster: HttpsPoster,
    dane: bool,
    port: int = HTTPS_PORT,
) -> MtaStsCheck:
    name = f"_mta-sts.{domain}"
    result = MtaStsCheck()
    try:
        record = select_sts_record(await resolver.resolve_txt(name + "."))
    except TemporaryDnsError as exc:
        result.findings.append(could_not_check(name, exc))
        return result
    except StsSyntaxError as exc:
        result.findings.append(
            Finding(
                status=Status.FAIL, subject=name, message=f"the MTA-STS record is invalid: {exc}."
            )
        )
        return result
    if record is None:
        if dane:
            message = "no MTA-STS record; the MX hosts use DANE instead."
            status = Status.OK
        else:
            message = (
                "neither MTA-STS nor DANE: senders may deliver without TLS, and their "
                "reports can only say no-policy-found."
            )
            status = Status.WARN
        result.findings.append(Finding(status=status, subject=name, message=message))
        return result
    result.record, result.policy_id = record.text, record.id
    url = policy_url(domain, port)
    subject = f"mta-sts.{domain}"
    try:
        fetched = await poster.fetch(url, MAX_POLICY_BYTES)
    except DeliveryError as exc:
        detail = f"{exc.reason}: {exc.excerpt}" if exc.excerpt else exc.reason
        status = Status.UNKNOWN if exc.reason == "DNS lookup failed" else Status.FAIL
        result.findings.append(
            Finding(
                status=status,
                subject=subject,
                message=f"the MTA-STS policy could not be fetched from {url}: {detail}.",
            )
        )
        return result
    problem = _fetch_problem(fetched.status, fetched.content_type, fetched.too_large)
    if problem is None:
        try:
            policy = parse_policy(fetched.body)
        except StsSyntaxError as exc:
            problem = f"the policy is invalid: {exc}"
    if problem is not None:
        result.findings.append(
            Finding(
                status=Status.FAIL, subject=subject, message=f"{url}: {problem} (RFC 8461 §3.3)."
            )
        )
        return result
    result.mode, result.max_age, result.mx = policy.mode, policy.max_age, list(policy.mx)
    result.findings += _judge_policy(subject, policy.mode, policy.max_age, policy.mx, mx_hosts)
    return result


def _fetch_problem(status: int, content_type: str, too_large: bool) -> str | None:
    if 300 <= status < 400:
        return f"the server redirects (HTTP {status}); senders do not follow redirects"
    if status != 200:
        return f"the server answered HTTP {status}, not 200"
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "text/plain":
        return f"the media type is {media or 'missing'!r}, not text/plain"
    if too_large:
        return f"the policy is larger than {MAX_POLICY_BYTES} bytes"
    return None


def _judge_policy(
    subject: str, mode: str, max_age: int, patterns: Sequence[str], mx_hosts: Sequence[str]
) -> list[Finding]:
    findings = []
    if mode == "enforce":
        findings.append(
            Finding(
                status=Status.OK,
                subject=subject,
                message=f"policy mode enforce, max_age {max_age}.",
            )
        )
    else:
        findings.append(
            Finding(
                status=Status.WARN,
                subject=subject,
                message=f"policy mode {mode}: senders report failures but still deliver "
                "without a valid certificate.",
            )
        )
    if max_age < SHORT_MAX_AGE:
        findings.append(
            Finding(
                status=Status.WARN,
                subject=subject,
                message=f"max_age {max_age} is under a day; RFC 8461 §3.2 suggests weeks.",
            )
        )
    if mode == "none":
        return findings
    for host in mx_hosts:
        if not any(mx_matches(host, pattern) for pattern in patterns):
            status = Status.FAIL if mode == "enforce" else Status.WARN
            findings.append(
                Finding(
                    status=status,
                    subject=host,
                    message=f"MX host {host} is matched by no mx pattern of the policy: "
                    "MTA-STS senders will not deliver to it (RFC 8461 §4.1).",
                )
            )
    if mx_hosts and all(any(mx_matches(h, p) for p in patterns) for h in mx_hosts):
        findings.append(
            Finding(
                status=Status.OK,
                subject=subject,
                message="every MX host is matched by an mx pattern.",
            )
        )
    return findings
