"""A built report keeps the rua of its record that this service can not use, with the
reason (issue 18: never dropped silently; shown in previews and listings).

Revision ID: 0012
Revises: 0007
"""

from alembic import op

revision = "0012"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- [{"rua": uri as published, "reason": why no delivery}]: bad scheme, unparseable
    -- address or host. NULL: every rua of the record is used.
    ALTER TABLE reports ADD COLUMN unusable_rua jsonb;
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE reports DROP COLUMN unusable_rua;")
