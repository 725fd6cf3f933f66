"""Tokens, UTC days, and the per-day aggregate counters of ingest.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE api_tokens (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name         text        NOT NULL,
        scopes       text[]      NOT NULL,
        token_hash   bytea       NOT NULL UNIQUE,
        created_at   timestamptz NOT NULL DEFAULT now(),
        revoked_at   timestamptz,
        CHECK (name <> '' AND cardinality(scopes) > 0)
    );
    -- A name identifies one active token; a revoked name may be reused.
    CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens (name) WHERE revoked_at IS NULL;

    -- A UTC day that is closed takes no more results (its reports are built).
    CREATE TABLE days (
        day        date PRIMARY KEY,
        closed_at  timestamptz
    );

    -- Session counters per (UTC day, policy). The policy's fields are kept inline so a
    -- day reads back in one scan; policy_key is their 16-byte digest (app.tlsrpt.model).
    CREATE TABLE policy_counts (
        day            date     NOT NULL,
        policy_key     bytea    NOT NULL,
        policy_type    text     NOT NULL CHECK (policy_type IN ('sts', 'tlsa', 'no-policy-found')),
        policy_domain  text     NOT NULL,
        policy_string  text[]   NOT NULL,
        mx_host        text[]   NOT NULL,
        success_count  bigint   NOT NULL DEFAULT 0,
        failure_count  bigint   NOT NULL DEFAULT 0,
        -- Sessions that were not themselves delivering a TLS report (RFC 8460 §3):
        -- only these may cause a report to be sent.
        trigger_count  bigint   NOT NULL DEFAULT 0,
        PRIMARY KEY (day, policy_key)
    );
    CREATE INDEX policy_counts_domain ON policy_counts (day, policy_domain);

    -- Failure details per (day, policy, detail); detail_key digests every field.
    CREATE TABLE failure_counts (
        day                     date    NOT NULL,
        policy_key              bytea   NOT NULL,
        detail_key              bytea   NOT NULL,
        result_type             text    NOT NULL,
        sending_mta_ip          inet,
        receiving_mx_hostname   text,
        receiving_mx_helo       text,
        receiving_ip            inet,
        additional_information  text,
        failure_reason_code     text,
        failed_session_count    bigint  NOT NULL DEFAULT 0,
        PRIMARY KEY (day, policy_key, detail_key)
    );

    -- Optional breakdown by RCPT TO domain (SPEC §3 `recipient-domain`).
    CREATE TABLE recipient_counts (
        day               date    NOT NULL,
        policy_key        bytea   NOT NULL,
        recipient_domain  text    NOT NULL,
        success_count     bigint  NOT NULL DEFAULT 0,
        failure_count     bigint  NOT NULL DEFAULT 0,
        PRIMARY KEY (day, policy_key, recipient_domain)
    );
    """)


def downgrade() -> None:
    op.execute("""
    DROP TABLE recipient_counts;
    DROP TABLE failure_counts;
    DROP TABLE policy_counts;
    DROP TABLE days;
    DROP TABLE api_tokens;
    """)
