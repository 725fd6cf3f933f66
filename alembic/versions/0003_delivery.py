"""Delivery: leases on deliveries, every attempt, the suppression list, scheduler jobs.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- A claimed delivery is 'sending' under a lease; an expired lease means its owner
    -- died, and any instance may claim it again.
    ALTER TABLE deliveries
        ADD COLUMN lease_owner      text,
        ADD COLUMN lease_expires_at timestamptz,
        ADD COLUMN last_attempt_at  timestamptz,
        ADD CONSTRAINT deliveries_state_known CHECK (state IN (
            'pending', 'sending', 'sent', 'failed', 'suppressed', 'no_dkim_key', 'disabled'
        )),
        ADD CONSTRAINT deliveries_kind_known CHECK (kind IN ('mailto', 'https'));
    CREATE INDEX deliveries_leases ON deliveries (lease_expires_at) WHERE state = 'sending';
    CREATE INDEX deliveries_state ON deliveries (state, id);

    -- Every attempt to hand a report over, with what the other side said.
    CREATE TABLE delivery_attempts (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id      bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        attempt          integer     NOT NULL,
        started_at       timestamptz NOT NULL,
        finished_at      timestamptz NOT NULL,
        -- 'lease_expired': the instance that tried died; the outcome is unknown.
        outcome          text        NOT NULL
            CHECK (outcome IN ('sent', 'temporary', 'permanent', 'lease_expired')),
        smtp_reply_code  integer,
        http_status      integer,
        reason           text,
        excerpt          text,
        owner            text        NOT NULL
    );
    CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id, id);

    -- Addresses and URIs the operator silenced; `target` is normalised
    -- ('mailto:<address>' or the https URI).
    CREATE TABLE suppressions (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        target      text        NOT NULL UNIQUE,
        comment     text        NOT NULL DEFAULT '',
        expires_at  timestamptz,
        created_at  timestamptz NOT NULL DEFAULT now()
    );

    -- One row per (job, day): the instance that inserts or takes over the row runs it.
    CREATE TABLE scheduler_jobs (
        job              text        NOT NULL,
        day              date        NOT NULL,
        state            text        NOT NULL CHECK (state IN ('running', 'retry', 'done')),
        owner            text,
        lease_expires_at timestamptz,
        next_run_at      timestamptz,
        runs             integer     NOT NULL DEFAULT 0,
        last_error       text,
        started_at       timestamptz NOT NULL,
        finished_at      timestamptz,
        PRIMARY KEY (job, day)
    );
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE scheduler_jobs;
    DROP TABLE suppressions;
    DROP TABLE delivery_attempts;
    DROP INDEX deliveries_state;
    DROP INDEX deliveries_leases;
    ALTER TABLE deliveries
        DROP CONSTRAINT deliveries_kind_known,
        DROP CONSTRAINT deliveries_state_known,
        DROP COLUMN last_attempt_at,
        DROP COLUMN lease_expires_at,
        DROP COLUMN lease_owner;
    """)
