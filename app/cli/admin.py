"""`tlsrpt migrate` and `tlsrpt export-openapi`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.runtime import database_url, settings_or_exit


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("migrate", help="apply database migrations")
    p.set_defaults(func=migrate)
    p = sub.add_parser("export-openapi", help="write the OpenAPI spec (default: stdout)")
    p.add_argument("--output", "-o", type=Path, help="file to write, e.g. openapi/openapi.json")
    p.set_defaults(func=export_openapi)


def migrate(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    from app.db.migrate import upgrade

    with database_url(settings, migrate=False) as url:
        upgrade(url)
    print("database migrated")
    return 0


def openapi_text() -> str:
    """The spec as committed in openapi/openapi.json: built from the app, no database."""
    from pydantic import SecretStr

    from app.config import Settings
    from app.main import create_app

    app = create_app(Settings(database_url=SecretStr("postgresql://unused/")))
    return json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n"


def export_openapi(args: argparse.Namespace) -> int:
    text = openapi_text()
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0
