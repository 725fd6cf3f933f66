"""Reports read from a mailbox over IMAP are stored with received_via 'imap'.

Revision ID: 0006
Revises: 0004
"""

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE inbound_reports DROP CONSTRAINT inbound_reports_received_via_check;
    ALTER TABLE inbound_reports ADD CONSTRAINT inbound_reports_received_via_check
        CHECK (received_via IN ('https', 'mail', 'lmtp', 'imap'));
    """)


def downgrade() -> None:
    op.execute("""
    ALTER TABLE inbound_reports DROP CONSTRAINT inbound_reports_received_via_check;
    ALTER TABLE inbound_reports ADD CONSTRAINT inbound_reports_received_via_check
        CHECK (received_via IN ('https', 'mail', 'lmtp'));
    """)
