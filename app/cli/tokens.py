"""`tlsrpt token create|list|revoke`: manage bearer tokens (works on the embedded DB too)."""

from __future__ import annotations

import argparse
import sys

from app.cli.runtime import run_with_resources, settings_or_exit
from app.tokens.service import Scope, TokenNameTakenError, create_token, list_tokens, revoke_token


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="create, list and revoke API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create a token; prints it on the last line")
    p.add_argument("--name", required=True, help="a name to list and revoke it by")
    p.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="repeat for several scopes",
    )
    p.set_defaults(func=_create)
    p = tsub.add_parser("list", help="list tokens (never their secrets)")
    p.set_defaults(func=_list)
    p = tsub.add_parser("revoke", help="revoke the active token of this name")
    p.add_argument("name", help="the token's name, as given to `tlsrpt token create --name`")
    p.set_defaults(func=_revoke)


def _create(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    scopes = [Scope(s) for s in args.scope]

    try:
        token = run_with_resources(
            settings, lambda res: create_token(res.pool, args.name, scopes, clock=res.clock)
        )
    except TokenNameTakenError:
        print(f"tlsrpt: an active token named {args.name!r} exists", file=sys.stderr)
        return 1
    print(
        f"created token {args.name!r} with scopes {', '.join(sorted(args.scope))}; "
        "it is shown only once:",
        file=sys.stderr,
    )
    print(token)
    return 0


def _list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    rows = run_with_resources(settings, lambda res: list_tokens(res.pool))
    print(f"{'NAME':24} {'SCOPES':24} {'CREATED':20} STATE")
    for t in rows:
        state = "revoked " + t.revoked_at.strftime("%Y-%m-%d %H:%M") if t.revoked_at else "active"
        print(
            f"{t.name:24} {','.join(t.scopes):24} "
            f"{t.created_at.strftime('%Y-%m-%d %H:%M'):20} {state}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    done = run_with_resources(
        settings, lambda res: revoke_token(res.pool, args.name, clock=res.clock)
    )
    if not done:
        print(f"tlsrpt: no active token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.name!r}")
    return 0
