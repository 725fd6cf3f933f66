"""The shared test database is, after `reset`, as the migrations left it."""

from __future__ import annotations

import psycopg
import pytest

from app.db.migrate import expected_heads
from tests.database import SharedDatabase


def test_reset_empties_every_table_and_restarts_identities(
    shared_database: SharedDatabase,
) -> None:
    url = shared_database.url
    with psycopg.connect(url, autocommit=True) as conn:
        (report,) = (
            conn.execute(
                """
            INSERT INTO reports (report_id, day, policy_domain, report_json, report_gzip,
                                 filename, rua)
            VALUES ('r1', '2026-11-24', 'example.com', '{}', '', 'f', '{mailto:a@b.example}')
            RETURNING id
            """
            ).fetchone()
            or ()
        )
        conn.execute(
            "INSERT INTO deliveries (report_pk, rua, kind, next_attempt_at)"
            " VALUES (%s, 'mailto:a@b.example', 'mailto', now())",
            (report,),
        )
        conn.execute(
            "INSERT INTO api_tokens (name, scopes, token_hash) VALUES ('t', '{read}', '\\x01')"
        )
    # A session a test left open, holding locks, is ended (as DROP DATABASE ... FORCE did).
    with psycopg.connect(url) as stray:
        stray.execute("SELECT 1 FROM reports FOR UPDATE")

        shared_database.reset()

        with pytest.raises(psycopg.errors.AdminShutdown):
            stray.execute("SELECT 1")
    with psycopg.connect(url, autocommit=True) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM reports), (SELECT count(*) FROM deliveries),"
            " (SELECT count(*) FROM api_tokens)"
        ).fetchone()
        assert counts == (0, 0, 0)
        heads = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
        assert heads == set(expected_heads())
        (token_id,) = (
            conn.execute(
                "INSERT INTO api_tokens (name, scopes, token_hash)"
                " VALUES ('t', '{read}', '\\x01') RETURNING id"
            ).fetchone()
            or ()
        )
        assert token_id == 1
    shared_database.reset()
