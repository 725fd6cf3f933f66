"""Embedded PostgreSQL (the `pgserver` package) for machines without a database server.

Used when `TLSRPT_DATABASE_URL` is unset: the server's data lives under
`TLSRPT_DATA_DIR/pgdata` and is kept between runs. pgserver shares one server between all
processes that open the same data directory (so `tlsrpt token create` works while
`tlsrpt serve` runs) and stops it when the last of them exits. As root, pgserver runs
the server as an unprivileged system user of its own, since PostgreSQL refuses root.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

DATABASE_NAME = "tlsrpt"


@dataclass
class EmbeddedDatabase:
    """A running embedded server; `url` points at the service's own database."""

    url: str
    server: Any

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process holds one."""
        self.server.cleanup()


def start_embedded(data_dir: Path) -> EmbeddedDatabase:
    """Start (or join) the embedded server under data_dir and ensure our database exists."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.simplefilter("ignore")
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir / "pgdata", cleanup_mode="stop"
        )
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": DATABASE_NAME}
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    log.info("embedded_database_started", extra={"fields": {"data_dir": str(data_dir)}})
    return EmbeddedDatabase(url=server.get_uri(DATABASE_NAME), server=server)
