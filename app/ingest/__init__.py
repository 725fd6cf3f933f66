"""Ingest: session results from MTAs, aggregated per UTC day and policy in PostgreSQL."""
