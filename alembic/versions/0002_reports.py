"""Reports: the build outcome per (day, policy domain), built reports, their deliveries.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- One row per (UTC day, policy domain): the outcome of building, visible to operators.
    CREATE TABLE report_domains (
        day              date        NOT NULL,
        policy_domain    text        NOT NULL,
        state            text        NOT NULL
            CHECK (state IN ('pending', 'built', 'no_report', 'gave_up')),
        -- Why no report: 'no_record', 'multiple_records', 'syntax_error', 'no_usable_rua',
        -- 'only_report_delivery_results', 'success_only_day_disabled',
        -- 'dns_temporary_failure: ...'
        reason           text,
        attempts         integer     NOT NULL DEFAULT 0,
        first_attempt_at timestamptz,
        -- For 'pending' after a temporary DNS error: not retried before this.
        next_attempt_at  timestamptz,
        updated_at       timestamptz NOT NULL DEFAULT now(),
        -- Added by the reports helper: the readable detail of `reason` (the record's
        -- syntax error, why each rua is unusable), for operators.
        detail           text,
        PRIMARY KEY (day, policy_domain)
    );
    CREATE INDEX report_domains_retry ON report_domains (next_attempt_at)
        WHERE state = 'pending';

    -- One row per built report.
    CREATE TABLE reports (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        report_id      text        NOT NULL UNIQUE,   -- RFC 8460 §4.4 report-id
        day            date        NOT NULL,
        policy_domain  text        NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        report_json    bytea       NOT NULL,          -- exact JSON bytes that are sent
        report_gzip    bytea       NOT NULL,          -- gzip of report_json
        filename       text        NOT NULL,          -- RFC 8460 §5.1 name
        rua            text[]      NOT NULL,
        UNIQUE (day, policy_domain)
    );
    -- gzip does not compress again: keep PostgreSQL from trying on every insert.
    ALTER TABLE reports ALTER COLUMN report_gzip SET STORAGE EXTERNAL;

    -- One row per (report, usable rua).
    CREATE TABLE deliveries (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        report_pk        bigint      NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
        rua              text        NOT NULL,        -- normalised URI as in reports.rua
        kind             text        NOT NULL,        -- 'mailto' | 'https'
        state            text        NOT NULL DEFAULT 'pending',
            -- pending | sending | sent | failed | suppressed | no_dkim_key | disabled
        next_attempt_at  timestamptz NOT NULL,        -- not before this (window + jitter)
        attempts         integer     NOT NULL DEFAULT 0,
        first_attempt_at timestamptz,
        last_error       text,
        sent_at          timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now(),
        UNIQUE (report_pk, rua)
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE deliveries;
    DROP TABLE reports;
    DROP TABLE report_domains;
    """)
