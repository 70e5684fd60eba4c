"""Every Prometheus collector in one place (a leaf: imports nothing of ours).

Exposed at ``GET /metrics`` with the default process collectors (CPU, memory, fds).
Hot paths touch these once per event or per connection change, never per delivery.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
DELIVERIES = Counter(
    "livefeed_deliveries_total", "Events handed to local subscribers (fan-out count)."
)
LATENCY = Histogram(
    "livefeed_publish_to_delivery_seconds",
    "From the accept time (the event's ts) to fan-out in this process. Across hosts it "
    "includes their clock difference.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BROKER_UP = Gauge("livefeed_broker_up", "1 while the broker's live link is up.")
BROKER_OUTAGES = Counter(
    "livefeed_broker_link_lost_total", "Times the broker's live link was lost (reconnects)."
)
