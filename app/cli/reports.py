"""`tlsrpt preview DOMAIN --day YYYY-MM-DD`: print the exact report JSON for a domain.

The JSON goes to stdout byte for byte as it is (or would be) sent; where it goes (the
rua) and whether it is already built go to stderr. Nothing would be sent: exit 1 with
the reason; DNS can not tell now: exit 75 (EX_TEMPFAIL).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

import orjson

from app.cli.runtime import run_with_resources, settings_or_exit
from app.clock import system_clock
from app.dns.lookup import TemporaryDnsError
from app.report import service, views
from app.tlsrpt.names import normalise_domain

EX_TEMPFAIL = 75


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("preview", help="print the report JSON a policy domain gets for a UTC day")
    p.add_argument("domain", help="the policy domain (IDNA accepted)")
    p.add_argument(
        "--day",
        type=date.fromisoformat,
        default=None,
        help="the UTC day, YYYY-MM-DD (default: today, the day being collected)",
    )
    p.add_argument("--pretty", action="store_true", help="indent the JSON for reading")
    p.set_defaults(func=_preview)


def _preview(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    try:
        domain = normalise_domain(args.domain)
    except ValueError as exc:
        print(f"tlsrpt: invalid domain {args.domain!r}: {exc}", file=sys.stderr)
        return 2
    day: date = args.day or system_clock().date()

    try:
        result = run_with_resources(
            settings,
            lambda res: views.preview_report(
                res.pool, res.resolver, res.settings.report, day, domain, now=res.clock()
            ),
        )
    except service.NoReportError as exc:
        detail = f" ({exc.detail})" if exc.detail else ""
        print(f"tlsrpt: no report for {domain} on {day}: {exc.reason}{detail}", file=sys.stderr)
        return 1
    except TemporaryDnsError as exc:
        print(f"tlsrpt: DNS can not tell now, try again: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    state = "built" if result.stored else "not built yet"
    print(f"report for {domain} on {day} ({state}) to: {', '.join(result.rua)}", file=sys.stderr)
    for skipped in result.not_used:
        print(f"not sent to {skipped.rua}: {skipped.reason}", file=sys.stderr)
    if args.pretty:
        data = orjson.dumps(orjson.loads(result.report_json), option=orjson.OPT_INDENT_2)
    else:
        data = result.report_json
    sys.stdout.buffer.write(data + b"\n")
    sys.stdout.flush()
    return 0
