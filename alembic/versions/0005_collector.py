"""Ids of the batches recorded by ingest, so a batch delivered twice counts once.

The libtlsrpt collector sends every batch under a random id and sends it again when it
did not see the acknowledgement (a timeout, a crash between commit and spool update);
the second delivery finds its id here and adds nothing. Rows live as long as the
counters of their day (retention).

Revision ID: 0005
Revises: 0001
"""

from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE ingest_batches (
        batch_id     text        PRIMARY KEY CHECK (batch_id <> '' AND length(batch_id) <= 64),
        -- The newest day the batch counted; purged with that day's counters.
        day          date        NOT NULL,
        recorded_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX ingest_batches_day ON ingest_batches (day);
    """)


def downgrade() -> None:
    op.execute("DROP TABLE ingest_batches;")
