"""The fan-out's lock-free counts expose what prometheus_client's own types would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from livefeed.metrics import FanoutCounts

BUCKETS = (0.001, 0.0025, 1, 10)
LATENCIES = (0.0, 0.0005, 0.001, 0.0011, 0.0025, 1.0, 3.0, 10.0, 42.0)


def samples(registry: CollectorRegistry) -> list[str]:
    """The exposition's sample lines, without the _created ones only the library adds."""
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    ]


def test_fanout_counts_match_a_counter_and_a_histogram():
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counts = FanoutCounts(BUCKETS)
    ours.register(counts)
    deliveries = Counter("livefeed_deliveries", "d", registry=theirs)
    latency = Histogram("livefeed_publish_to_delivery_seconds", "l", buckets=BUCKETS,
                        registry=theirs)  # fmt: skip
    for n, seconds in enumerate(LATENCIES):
        counts.deliveries += n
        deliveries.inc(n)
        counts.observe_latency(seconds)
        latency.observe(seconds)

    assert samples(ours) == samples(theirs)
    assert 'livefeed_publish_to_delivery_seconds_bucket{le="0.001"} 3.0' in samples(ours)
