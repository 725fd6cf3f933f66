"""Bounces: DSN outcomes in the attempt log, and suppressions the bounces made.

A DSN (RFC 3464) about a sent report adds an attempt 'bounced' (permanent) or 'delayed'
(temporary). A rua that bounced on several days is suppressed automatically: `source`
tells those entries from the operator's, which an automatic one never replaces. The
bounce days of a rua are counted over its deliveries, hence the index on `rua`.

Revision ID: 0007
Revises: 0003
"""

from alembic import op

revision = "0007"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check;
    ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('sent', 'temporary', 'permanent', 'lease_expired', 'bounced',
                           'delayed'));
    CREATE INDEX delivery_attempts_bounced ON delivery_attempts (delivery_id, id)
        WHERE outcome = 'bounced';
    CREATE INDEX deliveries_rua ON deliveries (rua, id);

    ALTER TABLE suppressions
        ADD COLUMN source text NOT NULL DEFAULT 'operator'
            CHECK (source IN ('operator', 'bounces'));
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE suppressions DROP COLUMN source;
    DROP INDEX deliveries_rua;
    DROP INDEX delivery_attempts_bounced;
    DELETE FROM delivery_attempts WHERE outcome IN ('bounced', 'delayed');
    ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_outcome_check;
    ALTER TABLE delivery_attempts ADD CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('sent', 'temporary', 'permanent', 'lease_expired'));
    """)
