"""Web pages: the key that signs their session cookies, shared by every instance.

One row, made on first use by whichever instance signs a cookie first, so a session
works on every instance behind a load balancer and survives restarts, with nothing to
configure. `TLSRPT_UI__SESSION_KEY` overrides it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
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
    """)


def downgrade() -> None:
    op.execute("DROP TABLE ui_session_key;")
