"""Publishing into Redis from synchronous code (a Flask or Django view), with the same
Lua script, and so the same atomicity and idempotency, as the async broker."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from livefeed.brokers.base import Published
from livefeed.brokers.redis_layout import PUBLISH_LUA, Layout, parse_published, publish_args
from livefeed.errors import Unavailable
from livefeed.events import PreparedBatch


class SyncRedisStore:
    def __init__(self, url: str, prefix: str, history_size: int, idempotency_ttl: int) -> None:
        self._layout = Layout(prefix)
        self._history_size = history_size
        self._ttl = idempotency_ttl
        # Never retried: a retried script could store a batch twice.
        self._redis = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self._script = self._redis.register_script(PUBLISH_LUA)

    def publish(self, batch: PreparedBatch, ts: float) -> Published:
        args = publish_args(self._layout, self._history_size, self._ttl, batch, ts)
        try:
            result = self._script(args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not accept the publish: {exc}") from None
        return parse_published(result)

    def close(self) -> None:
        self._redis.close()
