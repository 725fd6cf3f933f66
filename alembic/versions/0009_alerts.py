"""Alerts: outgoing results per hour, the alerts raised, and their notifications.

After the inbound tables (0006): received reports get an index on their receipt time,
which the incoming-failures condition reads. The alert queries
also read the report and delivery tables; no constraint ties them together.

Revision ID: 0009
Revises: 0006
"""

from alembic import op

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- Sessions per (hour of receipt, policy domain), added in the ingest transaction: the
    -- same-day spike and silence conditions compare the last hour with the hours before.
    CREATE TABLE result_hours (
        hour           timestamptz NOT NULL,
        policy_domain  text        NOT NULL,
        success_count  bigint      NOT NULL DEFAULT 0,
        failure_count  bigint      NOT NULL DEFAULT 0,
        last_at        timestamptz NOT NULL,
        PRIMARY KEY (hour, policy_domain)
    );

    -- One row per raised alert. A condition (kind, subject) has at most one open alert:
    -- the partial unique index makes "raised once" hold across instances.
    CREATE TABLE alerts (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind          text        NOT NULL CHECK (kind IN ('incoming_failures',
            'outgoing_spike', 'delivery_failed', 'day_undelivered', 'dkim_mismatch',
            'silence', 'test')),
        -- What it is about: a policy domain, a rua, a day; '' for the whole service.
        subject       text        NOT NULL,
        -- The evaluation window (hour) in which it was raised.
        window_start  timestamptz NOT NULL,
        summary       text        NOT NULL,
        details       jsonb       NOT NULL,
        raised_at     timestamptz NOT NULL,
        last_seen_at  timestamptz NOT NULL,
        resolved_at   timestamptz,
        -- Set when the alert went into a notification digest (once).
        notified_at   timestamptz
    );
    CREATE UNIQUE INDEX alerts_open ON alerts (kind, subject) WHERE resolved_at IS NULL;
    CREATE INDEX alerts_unnotified ON alerts (id) WHERE notified_at IS NULL;
    CREATE INDEX alerts_raised ON alerts (raised_at, id);

    -- One digest to one target (a webhook URL or a mail address), sent and retried like
    -- a report delivery: claimed under a lease with FOR UPDATE SKIP LOCKED.
    CREATE TABLE alert_notifications (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel          text        NOT NULL CHECK (channel IN ('webhook', 'mail')),
        target           text        NOT NULL,
        payload          jsonb       NOT NULL,
        alert_ids        bigint[]    NOT NULL,
        state            text        NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts         integer     NOT NULL DEFAULT 0,
        next_attempt_at  timestamptz NOT NULL,
        lease_owner      text,
        lease_expires_at timestamptz,
        last_error       text,
        created_at       timestamptz NOT NULL,
        sent_at          timestamptz
    );
    -- Reports received (or received again) recently: the incoming-failures condition.
    CREATE INDEX inbound_reports_last_received ON inbound_reports (last_received_at);
    CREATE INDEX alert_notifications_due ON alert_notifications (next_attempt_at)
        WHERE state IN ('pending', 'sending');
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE alert_notifications;
    DROP TABLE alerts;
    DROP TABLE result_hours;
    DROP INDEX inbound_reports_last_received;
    """)
