"""The `tlsrpt` command. Each area registers its subcommands from its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg
from psycopg_pool import PoolTimeout

from app.cli import (
    admin,
    alerts,
    collect,
    delivery,
    dnscheck,
    inbound,
    reports,
    serve,
    tokens,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlsrpt",
        description="SMTP TLS Reporting (RFC 8460) service. Configuration: TLSRPT_* "
        "environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, admin, tokens, reports, delivery, inbound, collect, dnscheck, alerts):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        # An unreachable database is an operator's problem to fix, not a program error.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"tlsrpt: database unavailable: {reason}", file=sys.stderr)
        return 1
    return result
