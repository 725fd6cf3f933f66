"""`tlsrpt inbound summary DOMAIN`: what senders reported about a domain, per day and sender.

The same figures as `GET /v1/inbound/summary`, as a table: sessions that succeeded and
failed, the failure types, and under each sender the MX hosts (with their IPs) that
failed. Text from reports is shown with control characters escaped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from app.cli import imap
from app.cli.runtime import run_with_resources, settings_or_exit
from app.clock import system_clock
from app.inbound.service import SenderDay, summarize
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.text import display

DEFAULT_DAYS = 7


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inbound = sub.add_parser("inbound", help="reports others sent to your domains")
    isub = inbound.add_subparsers(dest="inbound_command", required=True, metavar="ACTION")
    p = isub.add_parser("summary", help="per day and sender: sessions, failures, MX hosts")
    p.add_argument("domain", help="your policy domain")
    p.add_argument("--from", dest="from_day", type=dt.date.fromisoformat, help="first day")
    p.add_argument("--to", dest="to_day", type=dt.date.fromisoformat, help="last day")
    p.set_defaults(func=_summary)
    imap.register(isub)


def _summary(args: argparse.Namespace) -> int:
    try:
        domain = normalise_domain(args.domain)
    except ValueError as exc:
        print(f"tlsrpt: invalid domain: {exc}", file=sys.stderr)
        return 2
    to_day = args.to_day or system_clock().date()
    from_day = args.from_day or to_day - dt.timedelta(days=DEFAULT_DAYS - 1)
    if from_day > to_day:
        print("tlsrpt: --from is after --to", file=sys.stderr)
        return 2
    settings = settings_or_exit()

    entries = run_with_resources(
        settings, lambda res: summarize(res.pool, domain, from_day, to_day)
    )
    print(f"Reports about {domain} from {from_day} to {to_day}")
    if not entries:
        print("no reports received")
        return 0
    print(format_table(entries))
    return 0


def format_table(entries: list[SenderDay]) -> str:
    header = ("DAY", "ORGANIZATION", "REPORTS", "OK", "FAILED", "FAILURE TYPES")
    rows = [
        (
            e.day.isoformat(),
            display(e.organization, 40),
            str(e.reports),
            str(e.successful_sessions),
            str(e.failed_sessions),
            ", ".join(f"{display(t, 40)} {n}" for t, n in e.failure_types.items()) or "-",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row, entry in zip([header, *rows], [None, *entries], strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if entry is None:
            continue
        for mx in entry.mx_by_failures():
            ips = f" ({', '.join(sorted(mx.receiving_ips))})" if mx.receiving_ips else ""
            types = ", ".join(display(t, 40) for t in sorted(mx.result_types))
            name = display(mx.mx_host, 100) if mx.mx_host else "(MX not reported)"
            lines.append(f"    MX {name}{ips}: {mx.failed_sessions} failed, {types}")
    return "\n".join(lines)
