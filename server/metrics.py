"""GET /metrics: the engine's gauges and counters and the time to first token, for Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from course_lib.engine import EngineStats
from server.limits import TTFT_BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GAUGES = {
    "requests_running": "Requests in the running batch.",
    "requests_waiting": "Requests admitted but waiting for a batch slot.",
    "kv_cache_blocks_used": "KV-cache blocks held by requests.",
    "kv_cache_blocks_total": "KV-cache blocks the engine has.",
    "max_batch_size": "The most requests one step runs.",
}
COUNTERS = {  # the exposition adds _total to a counter's name
    "prefix_cache_hits": "Prompt KV blocks reused from the prefix cache.",
    "generated_tokens": "Tokens generated since the server started.",
}


class _EngineCollector(Collector):
    """Reads the engine's stats at scrape time (the runner's latest copy)."""

    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name, help_text in GAUGES.items():
            yield GaugeMetricFamily(name, help_text, value=getattr(stats, name))
        for name, help_text in COUNTERS.items():
            yield CounterMetricFamily(name, help_text, value=getattr(stats, name + "_total"))


class Metrics:
    """One server's metrics, in a registry of its own (not prometheus_client's global one)."""

    def __init__(self, stats: Callable[[], EngineStats]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(stats))
        self.time_to_first_token = Histogram(
            "time_to_first_token_seconds", "Seconds from a request's arrival to its first token.",
            buckets=TTFT_BUCKETS, registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
