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
        -- Distinct policy domains: for display, and (indexed) to find a domain's reports.
        policy_domains     text[]      NOT NULL,
        policy_count       integer     NOT NULL,
        success_count      numeric     NOT NULL,
        failure_count      numeric     NOT NULL,
        has_failures       boolean     NOT NULL,
        -- The report's policies in their order, counts as the sender wrote them, and their
        -- failure details (result_type verbatim, even a type RFC 8460 does not name): JSON
        -- arrays of the rows the views inbound_policies and inbound_failures show. One
        -- row per report, not one per policy: a report of 50 policies costs one insert.
        policies           jsonb       NOT NULL,
        failures           jsonb       NOT NULL,
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
        UNIQUE (organization_name, report_id),
        CHECK (jsonb_typeof(policies) = 'array' AND jsonb_typeof(failures) = 'array'),
        CHECK (NOT jsonb_path_exists(policies, '$[*] ? (@.policy_type != "sts" &&
            @.policy_type != "tlsa" && @.policy_type != "no-policy-found")'))
    );
    CREATE INDEX inbound_reports_day ON inbound_reports (day, id);
    -- Finds a domain's reports (list filter, summary). GIN's pending list keeps inserts
    -- cheap: far cheaper than a row and a b-tree entry per policy.
    CREATE INDEX inbound_reports_policy_domains ON inbound_reports USING gin (policy_domains);

    -- The report's policies as rows, in their order.
    CREATE VIEW inbound_policies AS
    SELECT r.id AS report_pk, p.position, p.policy_type, p.policy_domain, p.policy_string,
        p.mx_host, p.success_count, p.failure_count, p.extra
    FROM inbound_reports r, jsonb_to_recordset(r.policies) AS p(position integer,
        policy_type text, policy_domain text, policy_string text[], mx_host text[],
        success_count bigint, failure_count bigint, extra jsonb);

    -- Failure details as rows, with the position of their policy.
    CREATE VIEW inbound_failures AS
    SELECT r.id AS report_pk, f.policy_position, f.position, f.result_type,
        f.sending_mta_ip, f.receiving_mx_hostname, f.receiving_mx_helo, f.receiving_ip,
        f.additional_information, f.failure_reason_code, f.failed_session_count, f.extra
    FROM inbound_reports r, jsonb_to_recordset(r.failures) AS f(policy_position integer,
        position integer, result_type text, sending_mta_ip inet, receiving_mx_hostname text,
        receiving_mx_helo text, receiving_ip inet, additional_information text,
        failure_reason_code text, failed_session_count bigint, extra jsonb);
    """)


def downgrade() -> None:
    op.execute("""
    DROP VIEW inbound_failures;
    DROP VIEW inbound_policies;
    DROP TABLE inbound_reports;
    """)
