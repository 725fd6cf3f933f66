"""Lenient receiving: a received report keeps the warnings of its reading, and may lack
`contact-info` (issue 18: stored, flagged, not refused).

Revision ID: 0011
Revises: 0006
"""

from alembic import op

revision = "0011"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE inbound_reports ALTER COLUMN contact_info DROP NOT NULL;
    -- What was read leniently, as [{"field": path, "reason": why}]: flagged fields,
    -- policies and failure details left uncounted (report_json keeps them). NULL: none.
    ALTER TABLE inbound_reports ADD COLUMN warnings jsonb;
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE inbound_reports DROP COLUMN warnings;
    UPDATE inbound_reports SET contact_info = '' WHERE contact_info IS NULL;
    ALTER TABLE inbound_reports ALTER COLUMN contact_info SET NOT NULL;
    """)
