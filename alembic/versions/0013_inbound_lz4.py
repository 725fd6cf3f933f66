"""Incoming reports compress their large values with lz4 where the server has it.

A report's inflated JSON (about 15 KiB for 50 policies) and its policies record set
are TOASTed; pglz, the default, cost PostgreSQL about 0.3 ms of a 0.7 ms insert per
report (bench/inbound.py). lz4 compresses at a fraction of that CPU for about a fifth
more bytes. A server built without lz4 (the embedded one) keeps pglz. Values already
stored keep their compression; new ones use lz4.

Revision ID: 0013
Revises: 0011
"""

from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    DO $$
    BEGIN
        ALTER TABLE inbound_reports ALTER COLUMN report_json SET COMPRESSION lz4,
            ALTER COLUMN policies SET COMPRESSION lz4,
            ALTER COLUMN failures SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported THEN
        RAISE NOTICE 'lz4 is not built into this server: inbound_reports keeps pglz';
    END
    $$;
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE inbound_reports ALTER COLUMN report_json SET COMPRESSION default,
        ALTER COLUMN policies SET COMPRESSION default,
        ALTER COLUMN failures SET COMPRESSION default;
    """)
