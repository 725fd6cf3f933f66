"""Incoming reports: what others send to the operator's domains (the rua endpoint).

A branch of its own from 0001 (the service upgrades to every head): nothing here
depends on the report or delivery tables.

Revision ID: 0004
Revises: 0001
"""

from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    -- One row per received report; the same (organization, report-id) is stored once,
    -- and a resend only counts up times_received.
    CREATE TABLE inbound_reports (
        id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        organization_name  text        NOT NULL,
        report_id          text        NOT NULL,
        contact_info       text        NOT NULL,
        start_at           timestamptz NOT NULL,
        end_at             timestamptz NOT NULL,
        -- The UTC day the report is about (the day its date-range starts).
        day                date        NOT NULL,
        -- Distinct policy domains, for display.
        policy_domains     text[]      NOT NULL,
        policy_count       integer     NOT NULL,
        success_count      numeric     NOT NULL,
        failure_count      numeric     NOT NULL,
        has_failures       boolean     NOT NULL,
        received_via       text        NOT NULL CHECK (received_via IN ('https', 'mail', 'lmtp')),
        received_at        timestamptz NOT NULL DEFAULT now(),
        times_received     integer     NOT NULL DEFAULT 1,
        last_received_at   timestamptz NOT NULL DEFAULT now(),
        -- The inflated JSON exactly as the sender wrote it.
        report_json        bytea       NOT NULL,
        -- Unknown top-level keys, kept for display (the JSON above has everything).
        extra              jsonb,
        -- For reports that came by mail: headers for display (the JSON is authoritative,
        -- RFC 8460 §5.6) and the DKIM verdict with the signing domain.
        mail_from          text,
        mail_subject       text,
        mail_message_id    text,
        mail_report_domain text,
        mail_submitter     text,
        mail_filename      text,
        dkim_verdict       text CHECK (dkim_verdict IN ('pass', 'fail', 'none', 'temperror')),
        dkim_domain        text,
        dkim_reason        text,
        UNIQUE (organization_name, report_id)
    );
    CREATE INDEX inbound_reports_day ON inbound_reports (day, id);

    -- The report's policies in their order; counts as the sender wrote them.
    CREATE TABLE inbound_policies (
        report_pk      bigint  NOT NULL REFERENCES inbound_reports (id) ON DELETE CASCADE,
        position       integer NOT NULL,
        policy_type    text    NOT NULL CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
        policy_domain  text    NOT NULL,
        policy_string  text[]  NOT NULL,
        mx_host        text[]  NOT NULL,
        success_count  bigint  NOT NULL,
        failure_count  bigint  NOT NULL,
        extra          jsonb,
        PRIMARY KEY (report_pk, position)
    );
    -- Finds a domain's reports (list filter, summary); cheaper to keep up on insert than
    -- a GIN index on inbound_reports.policy_domains.
    CREATE INDEX inbound_policies_domain ON inbound_policies (policy_domain, report_pk);

    -- Failure details; result_type verbatim, even a type RFC 8460 does not name.
    CREATE TABLE inbound_failures (
        report_pk               bigint  NOT NULL,
        policy_position         integer NOT NULL,
        position                integer NOT NULL,
        result_type             text    NOT NULL,
        sending_mta_ip          inet,
        receiving_mx_hostname   text,
        receiving_mx_helo       text,
        receiving_ip            inet,
        additional_information  text,
        failure_reason_code     text,
        failed_session_count    bigint  NOT NULL,
        extra                   jsonb,
        PRIMARY KEY (report_pk, policy_position, position),
        FOREIGN KEY (report_pk, policy_position)
            REFERENCES inbound_policies (report_pk, position) ON DELETE CASCADE
    );
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE inbound_failures;
    DROP TABLE inbound_policies;
    DROP TABLE inbound_reports;
    """)
