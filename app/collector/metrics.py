"""The collector's counters, and their Prometheus exposition.

The pipeline keeps plain integers (the reader thread and the event loop each write only
their own), and a prometheus-client custom collector reads them at scrape time, so several
collectors (tests, the service) never fight over one global registry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.tlsrpt.libtlsrpt import INVALID_KINDS


@dataclass
class CollectorStats:
    datagrams_received: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    results_forwarded: int = 0
    batches_forwarded: int = 0
    batches_spooled: int = 0
    results_spooled: int = 0
    batches_failed: int = 0
    batches_refused: int = 0
    results_refused: int = 0
    results_dropped_spool_full: int = 0
    spool_bytes: int = 0
    spool_batches: int = 0


class StatsCollector(Collector):
    """Exposes one collector's stats as `tlsrpt_collector_*` metrics."""

    def __init__(self, stats: Callable[[], CollectorStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        invalid = CounterMetricFamily(
            "tlsrpt_collector_invalid_datagrams",
            "Datagrams skipped as invalid, by kind.",
            labels=["kind"],
        )
        for kind in INVALID_KINDS:
            invalid.add_metric([kind], s.invalid.get(kind, 0))
        yield invalid
        for name, documentation in _COUNTERS:
            yield CounterMetricFamily(
                f"tlsrpt_collector_{name}", documentation, value=getattr(s, name)
            )
        for name, documentation in _GAUGES:
            yield GaugeMetricFamily(
                f"tlsrpt_collector_{name}", documentation, value=getattr(s, name)
            )


# CollectorStats fields exposed as `tlsrpt_collector_<field>`.
_COUNTERS = (
    ("datagrams_received", "Datagrams read from the socket."),
    ("results_forwarded", "Policy results recorded by the sink."),
    ("batches_forwarded", "Batches recorded by the sink."),
    ("batches_spooled", "Batches written to the spool."),
    ("results_spooled", "Policy results written to the spool."),
    ("batches_failed", "Deliveries that failed and will be retried."),
    ("batches_refused", "Batches the sink refused for good (closed day)."),
    ("results_refused", "Policy results in refused batches."),
    ("results_dropped_spool_full", "Policy results lost because the spool was full."),
)
_GAUGES = (
    ("spool_bytes", "Bytes on disk in the spool."),
    ("spool_batches", "Batches waiting in the spool."),
)
