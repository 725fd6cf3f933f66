"""The aggregate counters partitioned by UTC day, so retention drops a day's partitions
instead of deleting its rows.

`policy_counts`, `failure_counts` and `recipient_counts` become `PARTITION BY RANGE (day)`
with one partition a day per table, named `<table>_YYYYMMDD`. Their keys already begin
with `day`, so the upserts' ON CONFLICT targets stay as they were.
`ensure_count_partitions(days)` creates the missing partitions of some days; ingest calls
it in a short transaction of its own before writing a day it has not seen (see
app/ingest/service.py for why not inside the ingest transaction). It creates each one
with CREATE TABLE ... LIKE and ATTACH PARTITION, which locks the parent SHARE UPDATE
EXCLUSIVE (ingest and reads go on) where CREATE TABLE ... PARTITION OF would lock it
ACCESS EXCLUSIVE; an advisory lock makes concurrent callers (several instances) take
turns, so each partition is created once.

Revision ID: 0008
Revises: 0001
"""

from alembic import op

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("policy_counts", "failure_counts", "recipient_counts")


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_unpartitioned")
        op.execute(f"ALTER INDEX {table}_pkey RENAME TO {table}_unpartitioned_pkey")
    op.execute("ALTER INDEX policy_counts_domain RENAME TO policy_counts_unpartitioned_domain")
    keys = {
        "policy_counts": "day, policy_key",
        "failure_counts": "day, policy_key, detail_key",
        "recipient_counts": "day, policy_key, recipient_domain",
    }
    for table, key in keys.items():
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_unpartitioned INCLUDING DEFAULTS"
            f" INCLUDING CONSTRAINTS) PARTITION BY RANGE (day)"
        )
        op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")
    op.execute("CREATE INDEX policy_counts_domain ON policy_counts (day, policy_domain)")
    op.execute("""
    CREATE FUNCTION ensure_count_partitions(days date[]) RETURNS integer
    LANGUAGE plpgsql AS $$
    DECLARE
        d date;
        t text;
        p text;
        created integer := 0;
    BEGIN
        -- One creator at a time, across every instance: the second finds them made.
        PERFORM pg_advisory_xact_lock(84600002, 0);
        FOREACH d IN ARRAY days LOOP
            FOREACH t IN ARRAY ARRAY['policy_counts', 'failure_counts', 'recipient_counts'] LOOP
                p := t || '_' || to_char(d, 'YYYYMMDD');
                IF to_regclass(p) IS NULL THEN
                    EXECUTE format(
                        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', p, t);
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                        t, p, d, d + 1);
                    created := created + 1;
                END IF;
            END LOOP;
        END LOOP;
        RETURN created;
    END $$;

    SELECT ensure_count_partitions(coalesce(array_agg(DISTINCT day), '{}'))
    FROM policy_counts_unpartitioned;
    """)
    for table in TABLES:
        op.execute(f"INSERT INTO {table} SELECT * FROM {table}_unpartitioned")
        op.execute(f"DROP TABLE {table}_unpartitioned")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"CREATE TABLE {table}_flat (LIKE {table} INCLUDING ALL)")
        op.execute(f"INSERT INTO {table}_flat SELECT * FROM {table}")
        op.execute(f"DROP TABLE {table}")
        op.execute(f"ALTER TABLE {table}_flat RENAME TO {table}")
        op.execute(f"ALTER INDEX {table}_flat_pkey RENAME TO {table}_pkey")
    op.execute("ALTER INDEX policy_counts_flat_day_policy_domain_idx RENAME TO policy_counts_domain")
    op.execute("DROP FUNCTION ensure_count_partitions(date[])")
