"""Prometheus metrics of the process, served at `/metrics`.

Metric objects live in the default registry, as prometheus-client intends; every area
adds its own here so the names stay in one place. Figures that live in the database
(deliveries by state, received reports, open alerts) are read by the scheduler's alert
round into `DATABASE` and served from there, so a scrape never waits for a query.
Labels are bounded: no label names a remote policy domain.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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

# Outgoing results by policy type and result type (3 x 12 series at most).
INGEST_BY_RESULT = Counter(
    "tlsrpt_ingest_sessions_by_result_total",
    "Sessions counted, by policy type and result type",
    ["policy_type", "result_type"],
)

# Alerts (app/alerts): raised by kind, notifications by channel and outcome.
ALERTS_RAISED = Counter("tlsrpt_alerts_raised_total", "Alerts raised", ["kind"])
ALERT_NOTIFICATIONS = Counter(
    "tlsrpt_alert_notifications_total",
    "Alert notification attempts, by channel and outcome (sent, pending, failed)",
    ["channel", "state"],
)


@dataclass
class DatabaseFigures:
    """Figures read from the database by the scheduler's alert round (`app.alerts.gauges`):
    every instance serves the same values. Label sets are bounded by whoever fills it."""

    refreshed_at: float
    inbound_sessions: list[tuple[str, str, str, int]] = field(default_factory=list)
    inbound_reports: list[tuple[str, str, int]] = field(default_factory=list)
    inbound_newest: list[tuple[str, float]] = field(default_factory=list)
    failing_domains: int = 0
    deliveries: dict[str, int] = field(default_factory=dict)
    oldest_open_result_age_seconds: float = 0.0
    last_result_at: float | None = None
    alerts_open: dict[str, int] = field(default_factory=dict)


class DatabaseGauges(Collector):
    """Serves the latest `DatabaseFigures` at scrape time: a scrape costs no query."""

    def __init__(self) -> None:
        self.figures: DatabaseFigures | None = None

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        if f is None:
            return
        yield GaugeMetricFamily(
            "tlsrpt_database_figures_refreshed_timestamp_seconds",
            "When the figures below were read from the database",
            value=f.refreshed_at,
        )
        sessions = GaugeMetricFamily(
            "tlsrpt_inbound_sessions",
            "Sessions in reports received in the last 24 hours, by our policy domain,"
            " reporting organization and result type (top pairs; the rest as _other)",
            labels=["policy_domain", "organization", "result_type"],
        )
        for domain, org, rtype, n in f.inbound_sessions:
            sessions.add_metric([domain, org, rtype], n)
        yield sessions
        reports = GaugeMetricFamily(
            "tlsrpt_inbound_reports",
            "Reports received in the last 24 hours, by channel and DKIM verdict",
            labels=["channel", "dkim"],
        )
        for channel, dkim, n in f.inbound_reports:
            reports.add_metric([channel, dkim], n)
        yield reports
        newest = GaugeMetricFamily(
            "tlsrpt_inbound_newest_report_timestamp_seconds",
            "When the newest report of each organization arrived (the most recent ones)",
            labels=["organization"],
        )
        for org, ts in f.inbound_newest:
            newest.add_metric([org], ts)
        yield newest
        yield GaugeMetricFamily(
            "tlsrpt_failing_policy_domains",
            "Policy domains whose failure rate today crossed the alert threshold",
            value=f.failing_domains,
        )
        deliveries = GaugeMetricFamily(
            "tlsrpt_deliveries", "Report deliveries by state", labels=["state"]
        )
        for state, n in sorted(f.deliveries.items()):
            deliveries.add_metric([state], n)
        yield deliveries
        yield GaugeMetricFamily(
            "tlsrpt_oldest_open_result_age_seconds",
            "Age of the oldest result not in a closed day (from the start of its day)",
            value=f.oldest_open_result_age_seconds,
        )
        if f.last_result_at is not None:
            yield GaugeMetricFamily(
                "tlsrpt_last_result_timestamp_seconds",
                "When the newest outgoing result was ingested",
                value=f.last_result_at,
            )
        alerts = GaugeMetricFamily("tlsrpt_alerts_open", "Open alerts by kind", labels=["kind"])
        for kind, n in sorted(f.alerts_open.items()):
            alerts.add_metric([kind], n)
        yield alerts


DATABASE = DatabaseGauges()
REGISTRY.register(DATABASE)
