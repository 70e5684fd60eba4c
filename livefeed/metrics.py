"""Every Prometheus collector in one place (a leaf: imports nothing of ours).

Exposed at ``GET /metrics`` with the default process collectors (CPU, memory, fds).
Hot paths touch these once per event or per connection change, never per delivery.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONNECTIONS = Gauge("livefeed_connections", "Open subscriber connections.", ["transport"])
SUBSCRIPTIONS = Gauge(
    "livefeed_subscriptions", "Live subscriptions (connection x tool).", ["transport"]
)
CLOSED = Counter(
    "livefeed_connections_closed_total",
    "Connections the server closed, by reason (slow_consumer, too_many_requests, "
    "token_expired, going_away, ...).",
    ["reason"],
)
PUBLISHED = Counter(
    "livefeed_events_published_total", "Events accepted by this process, by kind.", ["kind"]
)
PUBLISH_REQUESTS = Counter(
    "livefeed_publish_requests_total", "POST /api/events requests, by status.", ["status"]
)


class FanoutCounts(Collector):
    """The fan-out's metrics, counted with plain arithmetic and read at scrape time.

    prometheus_client's Counter and Histogram take a lock per call, and the hub
    counts every batch it hands over: with events spread over many tools that was
    4-6 % of the CPU per delivery. The hub runs on one thread, so plain ints do.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.deliveries = 0  # events handed to local subscribers, summed over them
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # per bucket, the last one +Inf
        self._sum = 0.0

    def observe_latency(self, seconds: float) -> None:
        self._counts[bisect_left(self._bounds, seconds)] += 1  # le: bound >= seconds
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "livefeed_deliveries",
            "Events handed to local subscribers (fan-out count).",
            value=self.deliveries,
        )
        cumulative = list(accumulate(self._counts))
        bounds = [repr(float(b)) for b in self._bounds] + ["+Inf"]  # as Histogram has them
        yield HistogramMetricFamily(
            "livefeed_publish_to_delivery_seconds",
            "From the accept time (the event's ts) to fan-out in this process. Across "
            "hosts it includes their clock difference.",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=self._sum,
        )


FANOUT = FanoutCounts((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
REGISTRY.register(FANOUT)
BROKER_UP = Gauge("livefeed_broker_up", "1 while the broker's live link is up.")
BROKER_OUTAGES = Counter(
    "livefeed_broker_link_lost_total", "Times the broker's live link was lost (reconnects)."
)
