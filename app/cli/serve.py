"""`tlsrpt serve`: the HTTP API and the scheduler (`--no-scheduler`: the API alone), and
the IMAP intake when `TLSRPT_IMAP__HOST` is set.

Without `TLSRPT_DATABASE_URL` it starts the embedded PostgreSQL, migrates it, and stops
it when the server exits (SIGTERM and SIGINT stop uvicorn gracefully first).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI

from app.cli.collect import register_serve_options, serve_hooks
from app.cli.runtime import GracefulServer, database_url, settings_or_exit
from app.config import Settings

if TYPE_CHECKING:
    from app.main import Hook
    from app.resources import Resources

log = logging.getLogger(__name__)
# Our own logging and no Server header; the service trusts no proxy headers.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the API (embedded database unless configured)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port (default 1); each runs the scheduler too, "
        "which is safe: instances coordinate through the database",
    )
    p.add_argument(
        "--no-scheduler",
        action="store_true",
        help="run the API alone: no day closing, report building or delivery here",
    )
    p.add_argument(
        "--lmtp",
        metavar="HOST:PORT",
        type=_listen_address,
        help="also receive report mails by LMTP here (TLSRPT_INBOUND__LMTP_RECIPIENTS)",
    )
    register_serve_options(p)
    p.set_defaults(func=serve)


def _listen_address(value: str) -> str:
    from app.inbound.lmtp import parse_listen_address

    try:
        parse_listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def serve(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    from app.cli.imap import start_imap
    from app.cli.runtime import freeze_heap, start_scheduler
    from app.delivery.senders import check_dkim_key
    from app.delivery.signing import DkimKeyError
    from app.main import create_app

    if not args.no_scheduler:
        try:
            check_dkim_key(settings)
        except DkimKeyError as exc:
            print(f"tlsrpt: invalid configuration: {exc}", file=sys.stderr)
            return 2
    if args.workers < 1:
        print("tlsrpt: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        if args.libtlsrpt_socket:
            print(
                "tlsrpt: --libtlsrpt-socket needs --workers 1 (one reader per socket); run "
                "`tlsrpt collect` beside the workers instead",
                file=sys.stderr,
            )
            return 2
        if args.lmtp:
            print(
                "tlsrpt: --lmtp needs --workers 1 (one listener per port); run it in "
                "another `tlsrpt serve --no-scheduler --lmtp ...`",
                file=sys.stderr,
            )
            return 2
        return _serve_workers(args, settings)
    hooks: list[Hook] = [] if args.no_scheduler else [start_scheduler]
    if settings.imap.enabled:
        hooks.append(start_imap)
    if args.lmtp:
        hooks.append(lmtp_hook(args.lmtp))
    hooks += serve_hooks(args, settings)
    hooks.append(freeze_heap)  # last: after every other hook has loaded what it needs
    with database_url(settings) as url:
        app = create_app(settings, database_url=url, on_start=hooks)
        config = uvicorn.Config(app, host=args.host, port=args.port, **UVICORN_OPTIONS)
        log.info("serving", extra={"fields": {"host": args.host, "port": args.port}})
        GracefulServer(config).run()
    return 0


def lmtp_hook(address: str) -> Hook:
    """A `create_app` start hook running the LMTP listener for the app's lifetime."""
    from app.inbound.lmtp import parse_listen_address, start_lmtp

    host, port = parse_listen_address(address)

    async def start(res: Resources) -> Callable[[], Awaitable[None]]:
        server = await start_lmtp(
            res.inbound_committer,
            res.resolver,
            res.pool,
            res.clock,
            res.settings,
            res.bounce_tags(),
            host,
            port,
        )

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        return stop

    return start


# Set by `serve --workers N` for its worker processes (not an operator setting).
WORKER_SCHEDULER_ENV = "TLSRPT_INTERNAL_WORKER_SCHEDULER"


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Several uvicorn worker processes on one port; the parent only supervises.

    Workers read their settings from the environment like any instance; the parent
    passes the database URL (the embedded server's when none is configured) down."""
    with database_url(settings) as url:
        os.environ["TLSRPT_DATABASE_URL"] = url
        os.environ[WORKER_SCHEDULER_ENV] = "0" if args.no_scheduler else "1"
        log.info(
            "serving",
            extra={"fields": {"host": args.host, "port": args.port, "workers": args.workers}},
        )
        uvicorn.run(
            "app.cli.serve:worker_app",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            **UVICORN_OPTIONS,
        )
    return 0


def worker_app() -> FastAPI:
    """The app of one `serve --workers` process (uvicorn calls this factory)."""
    from app.cli.imap import start_imap
    from app.cli.runtime import freeze_heap, start_scheduler
    from app.main import create_app

    settings = settings_or_exit()
    hooks: list[Hook] = []
    if os.environ.get(WORKER_SCHEDULER_ENV) == "1":
        hooks.append(start_scheduler)
    if settings.imap.enabled:
        # Each worker watches; the mailbox lock lets one of them read at a time.
        hooks.append(start_imap)
    return create_app(settings, on_start=[*hooks, freeze_heap])
