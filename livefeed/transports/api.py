"""``/api/*`` (publish, history), ``/healthz`` and ``/readyz``.

Errors are ``{"error": {"code", "message", "field"}}`` with the contract's status.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from livefeed import metrics
from livefeed.auth import Access, PublishKeys
from livefeed.brokers.base import Broker
from livefeed.config import Settings
from livefeed.errors import (
    BrokerError,
    Forbidden,
    InvalidRequest,
    InvalidToken,
    LivefeedError,
    RateLimited,
    TooLarge,
    Unavailable,
)
from livefeed.events import PreparedBatch, parse_body
from livefeed.history import parse_id
from livefeed.presence import Presence
from livefeed.tokens import Claims, TokenError
from livefeed.types import decimal, is_channel, tool_list


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(error: LivefeedError, headers: Mapping[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error.to_json(), error.status, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it
    all: by Content-Length when given, else as it streams in."""
    declared = request.headers.get("content-length")
    declared_size = decimal(declared, sys.maxsize) if declared is not None else None
    if declared_size is not None and declared_size > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Api:
    def __init__(
        self, broker: Broker, presence: Presence, access: Access, settings: Settings
    ) -> None:
        self._broker = broker
        self._presence = presence
        self._access = access
        self._settings = settings
        self._keys = PublishKeys(
            settings.publish_keys, settings.publish_rate, settings.publish_burst
        )

    async def publish(self, request: Request) -> Response:
        try:
            key = self._keys.check(request.headers.get("authorization"))
            body = await read_body(request, self._settings.max_body_bytes)
            batch = parse_body(body, self._settings.max_batch)
            self._keys.charge(key, batch.deliveries, time.monotonic())
            try:
                published = await self._broker.publish(batch, time.time())
            except (Unavailable, BrokerError):  # nothing was stored: it costs nothing
                self._keys.refund(key, batch.deliveries)
                raise
        except LivefeedError as exc:
            metrics.PUBLISH_REQUESTS.labels(status=str(exc.status)).inc()
            return error_response(exc)
        except ClientDisconnect:  # hung up mid-body: nothing published, no one to tell
            metrics.PUBLISH_REQUESTS.labels(status="400").inc()
            return Response(status_code=400)
        metrics.PUBLISH_REQUESTS.labels(status="202").inc()
        count_published(batch)
        # "event": the index of the request's event each id belongs to (an extension: a
        # repeated idempotency key answers with its first publish's tools, not the ones asked)
        events = [
            {"tool": tool, "id": event_id, "event": index}
            for index, pairs in enumerate(published)
            for tool, event_id in pairs
        ]
        return json_response({"events": events}, 202)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def tool_events(self, request: Request) -> Response:
        tool = request.path_params["tool"]
        try:
            self._readable(request, [_channel(tool)])
            limit = _limit(request.query_params.get("limit"), self._settings.max_history_request)

            since_text = request.query_params.get("since")
            since = None
            if since_text is not None:
                since = parse_id(since_text)
                if since is None:
                    raise InvalidRequest(
                        "invalid_query",
                        "since: expected an event id like 1764040000000-0",
                        "since",
                    )
            page = await self._broker.history(tool, limit, since)
        except LivefeedError as exc:
            return error_response(exc)
        body = b",".join(event.payload for event in page.events)
        extra = b"" if page.recovered is None else b',"recovered":' + orjson.dumps(page.recovered)
        return Response(
            b'{"tool":' + orjson.dumps(tool) + extra + b',"events":[' + body + b"]}",
            media_type="application/json",
        )

    async def tool_presence(self, request: Request) -> Response:
        tool = request.path_params["tool"]
        try:
            self._readable(request, [_channel(tool)])
            [(count, users)] = (await self._presence.states([tool])).values()
        except LivefeedError as exc:
            return error_response(exc)
        return json_response({"tool": tool, "count": count, "users": users})

    async def presence(self, request: Request) -> Response:
        try:
            tools = list(tool_list(request.query_params.get("tools", "")))
            if not tools:
                raise InvalidRequest("invalid_query", "tools: name at least one tool", "tools")
            if len(tools) > self._settings.max_subscriptions:
                raise InvalidRequest(
                    "invalid_query",
                    f"tools: at most {self._settings.max_subscriptions} at once",
                    "tools",
                )
            self._readable(request, [_channel(tool) for tool in tools])
            states = await self._presence.states(tools)
        except LivefeedError as exc:
            return error_response(exc)
        return json_response({"presence": {tool: count for tool, (count, _) in states.items()}})

    def _readable(self, request: Request, channels: list[str]) -> None:
        """Raise unless every channel may be read with the request's token, if any
        (``?token=`` or ``Authorization: Bearer``)."""
        private = [channel for channel in channels if self._access.needs_token(channel)]
        if not private:
            return
        claims = request_claims(request, self._access)
        for channel in private:
            if not self._access.allows(claims, channel):
                raise Forbidden(f"{channel!r} is private: send a token that allows it", "tool")

    async def healthz(self, request: Request) -> Response:

        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            await self._broker.ping()
        except Unavailable as exc:
            return json_response({"status": "unavailable", "reason": exc.message}, 503)
        return json_response({"status": "ready"})


def _limit(text: str | None, most: int) -> int:
    if text is None:
        return 20
    limit = decimal(text, most)
    if limit is None or limit < 1:
        raise InvalidRequest(
            "invalid_query", f"limit: expected an integer from 1 to {most}", "limit"
        )
    return limit


def _channel(name: str) -> str:
    if not is_channel(name):
        raise InvalidRequest("invalid_tool", f"not a tool name: {name[:70]!r}", "tool")
    return name


def request_token(request: Request) -> str | None:
    """The request's token: ``?token=``, else ``Authorization: Bearer``; None without."""
    token = request.query_params.get("token")
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return token


def request_claims(request: Request, access: Access) -> Claims | None:
    """The claims of the request's token, None without one; an invalid or expired
    token is a 401."""
    token = request_token(request)
    if token is None:
        return None
    try:
        return access.verify(token, time.time())
    except TokenError as exc:  # TokenExpired included
        raise InvalidToken(str(exc)) from None


def count_published(batch: PreparedBatch) -> None:
    """Count a batch's tool events by kind once it is stored."""
    for event in batch.events:
        metrics.PUBLISHED.labels(kind=event.kind).inc(len(event.tools))
