"""Web pages: the key that signs their session cookies, and a closed day's totals.

`ui_session_key`: one row, made on first use by whichever instance signs a cookie first,
so a session works on every instance behind a load balancer and survives restarts, with
nothing to configure. `TLSRPT_UI__SESSION_KEY` overrides it.

`ui_ended_sessions`: sessions signed out before their cookie expires (the digest of the
session id, kept until that expiry), so a copy of a signed-out cookie is refused.

`days` gets the day's totals (policy domains, successful and failed sessions), written
when the day is closed: its counters never change after that, so the list of days reads
one row per closed day instead of aggregating 10,000 domains' rows per day.

Revision ID: 0010
Revises: 0007
"""

from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ui_session_key (
        id          integer     PRIMARY KEY CHECK (id = 1),
        key         bytea       NOT NULL CHECK (length(key) >= 32),
        created_at  timestamptz NOT NULL
    );
    CREATE TABLE ui_ended_sessions (
        session_hash  bytea       PRIMARY KEY,
        expires_at    timestamptz NOT NULL
    );
    ALTER TABLE days
        ADD COLUMN domain_count   integer,
        ADD COLUMN success_count  bigint,
        ADD COLUMN failure_count  bigint;
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE days DROP COLUMN domain_count, DROP COLUMN success_count,
        DROP COLUMN failure_count;
    DROP TABLE ui_ended_sessions;
    DROP TABLE ui_session_key;
    """)
