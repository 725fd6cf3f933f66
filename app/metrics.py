"""Prometheus metrics of the process, served at `/metrics`.

Metric objects live in the default registry, as prometheus-client intends; every area
adds its own here so the names stay in one place.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "tlsrpt_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tlsrpt_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
INGEST_RESULTS = Counter("tlsrpt_ingest_results_total", "Results (batch items) stored")
INGEST_SESSIONS = Counter("tlsrpt_ingest_sessions_total", "Sessions counted (sum of count)")
INGEST_REJECTED = Counter("tlsrpt_ingest_rejected_batches_total", "Batches refused", ["reason"])

# Delivery (RFC 8460 §5): one count per delivery (a report to one rua).
DELIVERIES_SENT = Counter("tlsrpt_deliveries_sent_total", "Reports handed over", ["kind"])
DELIVERIES_FAILED = Counter(
    "tlsrpt_deliveries_failed_total", "Deliveries given up (permanent or 24 h)", ["kind"]
)
DELIVERIES_RETRIED = Counter(
    "tlsrpt_deliveries_retried_total", "Temporary failures scheduled again", ["kind"]
)
DELIVERIES_SUPPRESSED = Counter(
    "tlsrpt_deliveries_suppressed_total", "Deliveries not sent: rua on the suppression list"
)
DELIVERIES_NOT_SENT = Counter(
    "tlsrpt_deliveries_not_sent_total",
    "Deliveries not sent by configuration (no_dkim_key, disabled)",
    ["state"],
)
BOUNCES = Counter(
    "tlsrpt_bounces_total",
    "DSNs about report mail, by what they recorded (bounced, delayed, unmatched, not_a_failure)",
    ["outcome"],
)
