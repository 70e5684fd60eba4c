"""Publishing into Redis from synchronous code (a Flask or Django view), with the same
Lua script, and so the same atomicity and idempotency, as the async broker, and the
same handling of a lost reply (see :meth:`livefeed.brokers.redis.RedisBroker.publish`)."""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, NoScriptError, RedisError, ResponseError
from redis.retry import Retry

from livefeed.brokers.base import Published
from livefeed.brokers.redis_layout import (
    PUBLISH_LUA,
    SETTLE_LUA,
    SETTLE_WITHIN,
    Layout,
    Settling,
    database_of,
    new_operation,
    parse_published,
    publish_args,
    refusal,
)
from livefeed.errors import Unavailable
from livefeed.events import PreparedBatch


class SyncRedisStore:
    def __init__(
        self,
        url: str,
        prefix: str,
        history_size: int,
        idempotency_ttl: int,
        *,
        timeout: float = 5.0,
        settle_within: float = SETTLE_WITHIN,
    ) -> None:
        self._history_size = history_size
        self._ttl = idempotency_ttl
        self._settle_within = settle_within
        # Never retried: a retried script could store a batch twice.
        self._redis = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2.0, socket_timeout=timeout
        )
        self._layout = Layout(prefix, database_of(self._redis.connection_pool))
        self._script = self._redis.register_script(PUBLISH_LUA)
        self._settle_script = self._redis.register_script(SETTLE_LUA)

    def publish(self, batch: PreparedBatch, ts: float) -> Published:
        operation = new_operation()
        args = publish_args(self._layout, self._history_size, self._ttl, batch, ts, operation)
        pool = self._redis.connection_pool
        connection = self._connected_for_publish()
        lost: Exception
        try:
            return parse_published(self._run_publish(connection, args))
        except (ResponseError, BusyLoadingError) as exc:  # answered: nothing was written
            raise refusal(exc) from None
        except (RedisError, OSError) as exc:  # sent, but the reply is lost or late
            connection.disconnect()
            lost = exc
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        return self._settle_publish(operation, lost)

    def _connected_for_publish(self) -> Any:
        """A pooled connection, connected (anew if Redis closed it meanwhile). A failure
        here means nothing was sent: ``Unavailable``."""
        pool = self._redis.connection_pool
        try:
            connection: Any = pool.get_connection()  # redis-py's Connection, untyped
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not accept the publish: {exc}") from None
        try:
            try:
                stale = connection.can_read(timeout=0)  # EOF, or a stray reply
            except (RedisError, OSError):
                stale = True
            if stale:
                connection.disconnect()
            connection.connect()
        except BaseException as exc:
            pool.release(connection)
            if isinstance(exc, (RedisError, OSError)):
                raise Unavailable(f"Redis did not accept the publish: {exc}") from None
            raise
        return connection

    def _run_publish(self, connection: Any, args: list[Any]) -> Any:
        connection.send_command("EVALSHA", self._script.sha, 0, *args)
        try:
            return connection.read_response()
        except NoScriptError:  # refused, not run: send the script itself
            connection.send_command("EVAL", PUBLISH_LUA, 0, *args)
            return connection.read_response()

    def _settle_publish(self, operation: str, lost: Exception) -> Published:
        settling = Settling(self._layout, operation, lost, self._settle_within, time.monotonic())
        while True:
            try:
                stored = self._settle_script(args=settling.args)
            except (RedisError, OSError) as exc:
                time.sleep(settling.wait_after(exc, time.monotonic()))
            else:
                return settling.verdict(stored)

    def close(self) -> None:
        self._redis.close()
