"""Ingest: session results from MTAs, aggregated per UTC day and policy in PostgreSQL.

`service` is the one write path every source calls (results, tallies, the collector) and
the read side other areas use; `wire` the two request bodies; `store` its SQL.
"""
