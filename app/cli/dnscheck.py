"""`tlsrpt dns-check`, `tlsrpt dkim-key generate` and `tlsrpt doctor`.

`dns-check DOMAIN...` prints each finding (`ok`, `warn`, `fail`, `unknown` = could not
check) with its reason, and the zone-file lines to publish; `--json` prints the result
model of `GET /v1/dns/check`. Exit status: 0 all good (warnings allowed), 1 something
fails, 2 could not check (or bad arguments). `doctor` uses the same statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from app.cli.runtime import database_url, settings_or_exit
from app.clock import system_clock
from app.dns.resolver import DnsResolver
from app.dnscheck.dkim import generate_key
from app.dnscheck.doctor import DoctorResult, run_doctor
from app.dnscheck.model import DnsCheckResult, DomainCheck, Finding, Status, exit_status
from app.dnscheck.service import check_domains

_LABEL = {Status.OK: "ok", Status.WARN: "WARN", Status.FAIL: "FAIL", Status.UNKNOWN: "??"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dns-check",
        help="check the DNS of domains you receive mail for: MX, TLSA, TLSRPT, MTA-STS",
    )
    p.add_argument("domains", nargs="+", metavar="DOMAIN", help="domain (IDNA accepted)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also connect to each MX on port 25: STARTTLS, certificate, TLSA match",
    )
    p.add_argument(
        "--sending",
        action="store_true",
        help="also check the sending side: DKIM key published, From aligned",
    )
    p.set_defaults(func=_dns_check)

    p = sub.add_parser("dkim-key", help="DKIM keys for report mail")
    keys = p.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    g = keys.add_parser(
        "generate", help="write a new private key (mode 0600) and print its DNS record"
    )
    g.add_argument("--domain", required=True, help="the signing domain (contact-info domain)")
    g.add_argument("--selector", required=True, help="the DKIM selector")
    g.add_argument("--out", required=True, type=Path, help="file to create (never overwritten)")
    g.set_defaults(func=_dkim_generate)

    p = sub.add_parser("doctor", help="check the configuration end to end; sends nothing")
    p.add_argument(
        "domains",
        nargs="*",
        metavar="DOMAIN",
        help="also check that these domains' TLSRPT records send reports here",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_doctor)


def _dns_check(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    resolver = DnsResolver(settings.dns)
    try:
        result = asyncio.run(
            check_domains(
                args.domains,
                resolver=resolver,
                settings=settings,
                clock=system_clock,
                probe=args.probe,
                sending=args.sending,
            )
        )
    except ValueError as exc:
        print(f"tlsrpt: invalid domain: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_check(result), end="")
    return result.exit_code


def format_check(result: DnsCheckResult) -> str:
    """The check as text: one block per domain, a line per finding, suggestions below."""
    lines: list[str] = []
    for check in result.domains:
        lines += _format_domain(check)
    lines.append(_summary(result.status))
    return "\n".join(lines) + "\n"


def _format_domain(check: DomainCheck) -> list[str]:
    name = check.domain + (f" ({check.domain_unicode})" if check.domain_unicode else "")
    lines = [
        f"{name}: {check.status.value}   (resolver: {', '.join(check.resolver)})",
        "  MX",
        *_findings(check.findings),
    ]
    for host in check.mx_hosts:
        label = host.host + (f" ({host.host_unicode})" if host.host_unicode else "")
        lines.append(f"  MX {host.preference} {label}  {' '.join(host.addresses)}")
        lines += _findings(host.findings)
    lines += ["  TLSRPT", *_findings(check.tlsrpt.findings)]
    lines += ["  MTA-STS", *_findings(check.mta_sts.findings)]
    if check.sending is not None:
        lines += ["  Sending", *_findings(check.sending)]
    return [*lines, ""]


def _findings(findings: list[Finding]) -> list[str]:
    lines = []
    for finding in findings:
        lines.append(f"    {_LABEL[finding.status]:<4}  {finding.subject}: {finding.message}")
        if finding.suggestion:
            lines.append(f"          publish: {finding.suggestion}")
    return lines


def _summary(status: Status) -> str:
    return {
        Status.OK: "all good",
        Status.WARN: "good, with warnings",
        Status.FAIL: "something fails: see FAIL above",
        Status.UNKNOWN: "could not check everything: see ?? above",
    }[status]


def _dkim_generate(args: argparse.Namespace) -> int:
    try:
        record = generate_key(args.domain, args.selector, args.out)
    except FileExistsError:
        print(f"tlsrpt: {args.out} exists; it is never overwritten", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"tlsrpt: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tlsrpt: can not write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote a new RSA key to {args.out} (mode 0600); publish:", file=sys.stderr)
    print(record)
    print(
        f"then set TLSRPT_DKIM__SELECTOR={args.selector.strip().lower()} "
        f"TLSRPT_DKIM__PRIVATE_KEY_FILE={args.out.resolve()} (signing domain: the "
        "TLSRPT_REPORT__CONTACT_INFO domain)",
        file=sys.stderr,
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    from app.db.migrate import expected_heads
    from app.tlsrpt.names import normalise_domain

    try:
        domains = [normalise_domain(d) for d in args.domains]
    except ValueError as exc:
        print(f"tlsrpt: invalid domain: {exc}", file=sys.stderr)
        return 2
    resolver = DnsResolver(settings.dns)
    with database_url(settings, migrate=False) as url:
        result = asyncio.run(
            run_doctor(
                settings,
                database_url=url,
                expected_heads=expected_heads(),
                resolver=resolver,
                domains=domains,
            )
        )
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_doctor(result), end="")
    return exit_status(result.status)


def format_doctor(result: DoctorResult) -> str:
    return "\n".join([*_findings(result.findings), _summary(result.status)]) + "\n"
