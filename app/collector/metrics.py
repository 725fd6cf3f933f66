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
        yield _counter(
            "datagrams_received", "Datagrams read from the socket.", s.datagrams_received
        )
        invalid = CounterMetricFamily(
            "tlsrpt_collector_invalid_datagrams",
            "Datagrams skipped as invalid, by kind.",
            labels=["kind"],
        )
        for kind in INVALID_KINDS:
            invalid.add_metric([kind], s.invalid.get(kind, 0))
        yield invalid
        yield _counter(
            "results_forwarded", "Policy results recorded by the sink.", s.results_forwarded
        )
        yield _counter("batches_forwarded", "Batches recorded by the sink.", s.batches_forwarded)
        yield _counter("batches_spooled", "Batches written to the spool.", s.batches_spooled)
        yield _counter("results_spooled", "Policy results written to the spool.", s.results_spooled)
        yield _counter(
            "batches_failed", "Deliveries that failed and will be retried.", s.batches_failed
        )
        yield _counter(
            "batches_refused", "Batches the sink refused for good (closed day).", s.batches_refused
        )
        yield _counter("results_refused", "Policy results in refused batches.", s.results_refused)
        yield _counter(
            "results_dropped_spool_full",
            "Policy results lost because the spool was full.",
            s.results_dropped_spool_full,
        )
        yield GaugeMetricFamily(
            "tlsrpt_collector_spool_bytes", "Bytes on disk in the spool.", value=s.spool_bytes
        )
        yield GaugeMetricFamily(
            "tlsrpt_collector_spool_batches",
            "Batches waiting in the spool.",
            value=s.spool_batches,
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(f"tlsrpt_collector_{name}", documentation, value=value)
