"""Alembic environment: runs the raw-SQL revisions against the URL given by app.db.migrate.

A transaction-level advisory lock serialises concurrent `tlsrpt migrate` runs (several
containers starting at once).
"""

from __future__ import annotations

import psycopg
from alembic import context
from sqlalchemy import create_engine, text


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def run_migrations_online() -> None:
    url = context.config.attributes.get("database_url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    # psycopg connects with the libpq string as given (URL or key=value conninfo).
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(url))
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=None, transaction_per_migration=False
        )
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(7318052621)"))
            context.run_migrations()
    engine.dispose()


run_migrations_online()
