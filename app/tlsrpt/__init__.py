"""RFC 8460 (SMTP TLS Reporting) protocol code: pure, no I/O.

`model` holds the vocabulary (policy and result types, aggregated policies and failure
details), `names` the normalisation of domains and addresses, `wire` the one wire model
of §4.4 JSON (names, limits, models, formatting), `tally` in-memory counting, `report`
report building, `record` the `_smtp._tls` record, `received`/`received_json` reports
received from others, `libtlsrpt` Postfix's datagrams. This package imports nothing from
the rest of `app` (tests/test_architecture.py holds it to that).
"""
