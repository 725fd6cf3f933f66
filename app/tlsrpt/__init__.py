"""RFC 8460 (SMTP TLS Reporting) protocol code: pure, no I/O.

`model` holds the vocabulary (policy and result types, aggregated policies and failure
details), `names` the normalisation of domains and addresses. Everything here is usable
by any other package; this package imports nothing from the rest of `app`.
"""
