"""The embedded broker: history and live events inside one process.

Used when no Redis is configured, so a fresh install works at once, and by the
behavioural suite as the reference the Redis broker must match. It keeps the same
promises as :mod:`livefeed.brokers.base`; "the backend is away" never happens.
Ids are assigned exactly as Redis streams assign them: the wall clock in
milliseconds, with a sequence for events in the same millisecond, never going back.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from livefeed.brokers.base import Broker, HistoryPage, PresenceEntries, PresenceStore, Published
from livefeed.envelope import Event, envelope_tail
from livefeed.events import PreparedBatch
from livefeed.history import IdKey, format_id, is_recoverable
from livefeed.types import FIREHOSE, ToolSlug


class _Stream:
    """One channel's history, trimmed to ``size`` entries, oldest first."""

    __slots__ = ("entries", "last", "max_deleted", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: deque[tuple[IdKey, ToolSlug, bytes]] = deque()
        self.last: IdKey | None = None  # the last id ever assigned
        self.max_deleted: IdKey = (0, 0)  # the newest id trimmed away

    def add(self, tool: ToolSlug, tail: bytes, now_ms: int) -> IdKey:
        last = self.last or (0, 0)
        key = (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)
        self.last = key
        self.entries.append((key, tool, tail))
        while len(self.entries) > self.size:
            self.max_deleted = self.entries.popleft()[0]
        return key


class MemoryBroker(Broker, PresenceStore):
    def __init__(
        self,
        history_size: int = 1000,
        idempotency_ttl: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._history_size = history_size
        self._idempotency_ttl = idempotency_ttl
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._subscribed: set[str] = set()
        # idempotency key -> (expires at, tool/id pairs); insertion order is expiry order
        self._seen: OrderedDict[str, tuple[float, list[tuple[str, str]]]] = OrderedDict()
        # tool -> process -> (deadline, entry)
        self._presence: dict[str, dict[str, tuple[float, tuple[int, tuple[str, ...]]]]] = {}

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        self.on_connection(True)

    async def close(self) -> None:
        self._subscribed.clear()

    async def ping(self) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(self._history_size)
        return stream

    def _forget_expired(self, now: float) -> None:
        while self._seen:
            key, (expires, _) = next(iter(self._seen.items()))
            if expires > now:
                return
            del self._seen[key]

    async def publish(self, batch: PreparedBatch, ts: float) -> Published:
        now = self._clock()
        self._forget_expired(now)
        now_ms = int(now * 1000)
        results: Published = []
        live: list[Event] = []
        for event in batch.events:
            key = event.idempotency_key
            if key is not None and key in self._seen:
                results.append(list(self._seen[key][1]))
                continue
            tail = envelope_tail(event.kind, ts, event.data)
            pairs = []
            for tool in event.tools:
                tool_id = format_id(self._stream(tool).add(tool, tail, now_ms))
                firehose_id = format_id(self._stream(FIREHOSE).add(tool, tail, now_ms))
                pairs.append((tool, tool_id))
                if tool in self._subscribed:
                    live.append(Event(tool, tool, tool_id, tail))
                if FIREHOSE in self._subscribed:
                    live.append(Event(FIREHOSE, tool, firehose_id, tail))
            if key is not None:
                self._seen[key] = (now + self._idempotency_ttl, pairs)
            results.append(pairs)
        # Delivered after the whole batch is stored, as Redis does after its script.
        for live_event in live:
            self.on_event(live_event)
        return results

    async def history(self, channel: str, limit: int, since: IdKey | None = None) -> HistoryPage:
        stream = self._streams.get(channel)
        entries = list(stream.entries) if stream else []
        if since is None:
            chosen = entries[-limit:] if limit > 0 else []
            return HistoryPage([Event(channel, t, format_id(k), d) for k, t, d in chosen])
        first = entries[0][0] if entries else None
        last = stream.last if stream else None
        recovered = is_recoverable(since, first, last, stream.max_deleted if stream else (0, 0))
        after = [e for e in entries if e[0] > since] if recovered else entries
        chosen = after[:limit]
        return HistoryPage([Event(channel, t, format_id(k), d) for k, t, d in chosen], recovered)

    async def write(self, process: str, entries: PresenceEntries, ttl: float) -> None:
        deadline = self._clock() + ttl
        for tool, entry in entries.items():
            per_process = self._presence.setdefault(tool, {})
            if entry[0] > 0:
                per_process[process] = (deadline, entry)
            else:
                per_process.pop(process, None)
                if not per_process:
                    del self._presence[tool]

    async def read(self, tools: list[str]) -> dict[str, PresenceEntries]:
        now = self._clock()
        merged: dict[str, PresenceEntries] = {}
        for tool in tools:
            per_process = self._presence.get(tool, {})
            for process in [p for p, (deadline, _) in per_process.items() if deadline <= now]:
                del per_process[process]
            merged[tool] = {p: entry for p, (_, entry) in per_process.items()}
        return merged
