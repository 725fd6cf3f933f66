"""`tlsrpt serve`: the HTTP API (and, as areas add them, the scheduler and listeners).

Without `TLSRPT_DATABASE_URL` it starts the embedded PostgreSQL, migrates it, and stops
it when the server exits (SIGTERM and SIGINT stop uvicorn gracefully first).
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from app.cli.runtime import GracefulServer, database_url, settings_or_exit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the API (embedded database unless configured)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    from app.main import create_app

    with database_url(settings) as url:
        app = create_app(settings, database_url=url, on_start=[])
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )
        log.info("serving", extra={"fields": {"host": args.host, "port": args.port}})
        GracefulServer(config).run()
    return 0
