"""Schema migrations: alembic with raw-SQL revisions under the top-level `alembic/` tree.

`upgrade` applies every revision up to all heads (areas may add independent branches).
`expected_heads` and `current_heads` let `/readyz` tell whether the database is migrated
without loading alembic on the request path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, errors


def script_location() -> Path:
    """The alembic tree: beside the package in a checkout, under share/ in an install."""
    candidates = [
        Path(__file__).resolve().parents[2] / "alembic",
        Path(sys.prefix) / "share" / "tlsrpt" / "alembic",
    ]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("alembic migrations not found beside the package or in share/")


def _config(url: str) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str) -> None:
    """Apply all pending migrations (idempotent; safe to run from several instances)."""
    import psycopg
    from alembic import command

    # Fail with psycopg's own error (one readable line) before alembic wraps it.
    psycopg.connect(url, connect_timeout=10).close()
    command.upgrade(_config(url), "heads")  # type: ignore[arg-type]


def expected_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory.from_config(_config("")).get_heads())  # type: ignore[arg-type]


async def current_heads(conn: AsyncConnection[tuple[Any, ...]]) -> frozenset[str]:
    """The revisions the database is at; empty when it was never migrated."""
    try:
        async with conn.transaction():
            cur = await conn.execute("SELECT version_num FROM alembic_version")
            return frozenset(str(row[0]) for row in await cur.fetchall())
    except errors.UndefinedTable:
        return frozenset()
