"""``Publisher`` and ``AsyncPublisher``: publish from the site's own Python code.

Both validate exactly as the HTTP API does (same :mod:`livefeed.errors`, same field
paths) before anything leaves the process, then either run the publish script in
Redis directly (``redis://`` URLs: no HTTP hop) or POST to a livefeed server
(``http(s)://`` URLs, with a publish key; the way to reach an embedded broker).

Publishers share the servers' ``LIVEFEED_REDIS_PREFIX`` and ``LIVEFEED_HISTORY_SIZE``
(read from the environment unless given), since the script trims history to that size.

Not guaranteed: ordering between two publishers racing on one tool (ids are
assigned by Redis in the order the scripts run).
"""

from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from livefeed.brokers.base import Broker, Published
from livefeed.coalesce import PublishCoalescer
from livefeed.config import one_setting
from livefeed.errors import (
    BadJson,
    BrokerError,
    InvalidEvent,
    LivefeedError,
    OutcomeUnknown,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from livefeed.events import PreparedBatch, prepare

_ERRORS: dict[str, type[LivefeedError]] = {
    "bad_json": BadJson,
    "unauthorized": Unauthorized,
    "too_large": TooLarge,
    "invalid_event": InvalidEvent,
    "unavailable": Unavailable,
    "outcome_unknown": OutcomeUnknown,
    "broker_error": BrokerError,
}


def _story(
    tools: list[str],
    author: dict[str, Any],
    title: str,
    body: str,
    url: str | None,
    tags: list[str] | None,
    trending: bool,
    idempotency_key: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"author": author, "title": title, "body": body, "trending": trending}
    if url is not None:
        data["url"] = url
    if tags:
        data["tags"] = _listed(tags, "data.tags")
    document: dict[str, Any] = {"kind": "story", "tools": _listed(tools, "tools"), "data": data}
    if idempotency_key is not None:
        document["idempotency_key"] = idempotency_key
    return document


def _listed(values: Iterable[str], field: str) -> list[str]:
    """Any iterable of strings as a list, but not a string: list("flask") would publish
    to the tools f, l, a, s and k."""
    if isinstance(values, str | bytes):
        raise InvalidEvent("expected an array of strings, got a string", field)
    return list(values)


def _activity(
    actor: dict[str, Any], verb: str, tool: str, idempotency_key: str | None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "kind": "activity",
        "data": {"actor": actor, "verb": verb, "tool": tool},
    }
    if idempotency_key is not None:
        document["idempotency_key"] = idempotency_key
    return document


class _Store(Protocol):
    def publish(self, batch: PreparedBatch, ts: float) -> Published: ...

    def close(self) -> None: ...


def _json_default(value: Any) -> Any:
    """Sets, which validation takes for lists (of tools, of tags), sent as JSON arrays."""
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _HttpTarget:
    """POST /api/events with a publish key; maps error replies back to exceptions."""

    # Longer than the server may take to settle a publish whose Redis reply was lost.
    def __init__(
        self, url: str, key: str | None, max_body_bytes: int, timeout: float = 30.0
    ) -> None:
        self._endpoint = url.rstrip("/") + "/api/events"
        self._key = key
        self._max_body_bytes = max_body_bytes
        self._timeout = timeout

    def post(self, document: Any, batch: PreparedBatch) -> Published:
        """Send the document as given (already validated here as ``batch``)."""
        body = orjson.dumps(document, default=_json_default)
        # Checked here because the server answers 413 from the Content-Length and
        # closes: a client still sending a large body sees only a reset, not the 413.
        if len(body) > self._max_body_bytes:
            raise TooLarge(f"the body is {len(body)} bytes; the limit is {self._max_body_bytes}")
        request = urllib.request.Request(
            self._endpoint,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self._key or ''}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                reply = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _error_from(exc) from None
        except urllib.error.URLError as exc:  # while connecting or sending: not processed
            raise Unavailable(f"could not reach {self._endpoint}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # sent; the answer is lost
            raise OutcomeUnknown(
                f"{self._endpoint} did not answer ({exc or type(exc).__name__}): the events "
                "may have been stored, so a retry may deliver them twice unless every event "
                "carries an idempotency_key"
            ) from None
        return _published(reply["events"], batch)


def _published(items: list[dict[str, Any]], batch: PreparedBatch) -> Published:
    """A 202's flat ``events`` list, per event of the batch. Each item's ``event`` (the
    index of its event) decides; a server that does not send it gets each event's count
    of tools, which is wrong after a repeated idempotency key with other tools."""
    if all(isinstance(item.get("event"), int) for item in items):
        published: Published = [[] for _ in batch.events]
        for item in items:
            published[item["event"]].append((item["tool"], item["id"]))
        return published
    pairs = [(item["tool"], item["id"]) for item in items]
    published = []
    for event in batch.events:
        published.append(pairs[: len(event.tools)])
        pairs = pairs[len(event.tools) :]
    return published


def _error_from(exc: urllib.error.HTTPError) -> LivefeedError:
    try:
        error = orjson.loads(exc.read())["error"]
        code, message, field = error["code"], error["message"], error.get("field")
    except (ValueError, KeyError, TypeError):  # not livefeed's answer: a proxy's, or a crash
        if exc.code in (500, 502, 504):  # the request may have been processed
            return OutcomeUnknown(
                f"HTTP {exc.code} from the server: the events may have been stored, so a "
                "retry may deliver them twice unless every event carries an idempotency_key"
            )
        return Unavailable(f"HTTP {exc.code} from the server")
    if code == "rate_limited":
        return RateLimited(message, float(exc.headers.get("Retry-After", "1")))
    return _ERRORS.get(code, Unavailable)(message, field)


def _settings_default(value: Any, field: str) -> Any:
    # Only that setting is read: the server's others, right or wrong, are not ours.
    return value if value is not None else one_setting(field)


class Publisher:
    """Synchronous publisher, for Flask/Django views. Thread-safe (redis-py's pool)."""

    def __init__(
        self, store: _Store | None = None, http: _HttpTarget | None = None, max_batch: int = 1000
    ) -> None:
        if (store is None) == (http is None):
            raise ValueError("give exactly one of store or http")
        self._store = store
        self._http = http
        self._max_batch = max_batch

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key: str | None = None,
        prefix: str | None = None,
        history_size: int | None = None,
        max_body_bytes: int | None = None,
    ) -> Publisher:
        """``redis://...`` publishes straight into Redis; ``http(s)://...`` to a server,
        refusing (``TooLarge``) a request body over the server's ``max_body_bytes``."""
        if url.startswith(("http://", "https://")):
            limit = _settings_default(max_body_bytes, "max_body_bytes")
            return cls(http=_HttpTarget(url, key, limit))
        from livefeed.brokers.redis_sync import SyncRedisStore

        return cls(
            SyncRedisStore(
                url,
                _settings_default(prefix, "redis_prefix"),
                _settings_default(history_size, "history_size"),
                600,
            )
        )

    def publish(self, document: Any) -> list[dict[str, str]]:
        """Publish one event or ``{"events": [...]}``; per event, ``{tool: id}``.

        Raises :class:`~livefeed.errors.PublishRejected` subclasses or
        :class:`~livefeed.errors.Unavailable`; then nothing was published. Raises
        :class:`~livefeed.errors.OutcomeUnknown` when the publish was sent but its
        answer was lost and could not be learned: it may have been published.
        """
        batch = prepare(document, self._max_batch)
        if self._http is not None:
            published = self._http.post(document, batch)
        else:
            assert self._store is not None
            published = self._store.publish(batch, time.time())
        return [dict(pairs) for pairs in published]

    def story(
        self,
        tools: list[str],
        author: dict[str, Any],
        title: str,
        body: str = "",
        url: str | None = None,
        tags: list[str] | None = None,
        trending: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, str]:
        """Publish a story to each of ``tools``; returns ``{tool: event id}``."""
        return self.publish(
            _story(tools, author, title, body, url, tags, trending, idempotency_key)
        )[0]

    def activity(
        self, actor: dict[str, Any], verb: str, tool: str, idempotency_key: str | None = None
    ) -> dict[str, str]:
        """Publish an activity to ``tool``; returns ``{tool: event id}``."""
        return self.publish(_activity(actor, verb, tool, idempotency_key))[0]

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher:
    """Asynchronous publisher over a :class:`~livefeed.brokers.base.Broker`
    (the Redis broker for ``redis://`` URLs), or over HTTP in a worker thread."""

    def __init__(
        self, broker: Broker | None = None, http: Publisher | None = None, max_batch: int = 1000
    ) -> None:
        if (broker is None) == (http is None):
            raise ValueError("give exactly one of broker or http")
        self._broker = broker
        self._http = http
        self._max_batch = max_batch
        # Concurrent publishes share broker calls (one script call per burst).
        self._coalescer = None if broker is None else PublishCoalescer(broker, max_batch)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key: str | None = None,
        prefix: str | None = None,
        history_size: int | None = None,
        max_body_bytes: int | None = None,
    ) -> AsyncPublisher:
        if url.startswith(("http://", "https://")):
            return cls(http=Publisher.from_url(url, key=key, max_body_bytes=max_body_bytes))
        from livefeed.brokers.redis import RedisBroker

        return cls(
            RedisBroker(
                url,
                _settings_default(prefix, "redis_prefix"),
                _settings_default(history_size, "history_size"),
            )
        )

    async def publish(self, document: Any) -> list[dict[str, str]]:
        if self._http is not None:
            return await asyncio.to_thread(self._http.publish, document)
        assert self._coalescer is not None
        batch = prepare(document, self._max_batch)
        return [dict(pairs) for pairs in await self._coalescer.publish(batch)]

    async def story(
        self,
        tools: list[str],
        author: dict[str, Any],
        title: str,
        body: str = "",
        url: str | None = None,
        tags: list[str] | None = None,
        trending: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, str]:
        return (
            await self.publish(
                _story(tools, author, title, body, url, tags, trending, idempotency_key)
            )
        )[0]

    async def activity(
        self, actor: dict[str, Any], verb: str, tool: str, idempotency_key: str | None = None
    ) -> dict[str, str]:
        return (await self.publish(_activity(actor, verb, tool, idempotency_key)))[0]

    async def close(self) -> None:
        if self._coalescer is not None:
            await self._coalescer.close()
        if self._broker is not None:
            await self._broker.close()
        if self._http is not None:
            self._http.close()
