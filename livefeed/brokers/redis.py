"""The Redis broker: a stream per channel for history and ids, pub/sub for live events.

* Publishing runs one Lua script per batch (brokers/lua/publish.lua): key type
  checks, then idempotency check, XADD with exact trimming, and PUBLISH, for every
  tool and the firehose, atomically, on the command link (brokers/redis_link.py).
  It is never retried behind the caller's back: a retried script could store a
  batch twice. A publish whose command
  never reached Redis raises ``Unavailable`` at once; one whose reply was lost
  after it was sent is *settled* (brokers/lua/settle.lua, see redis_layout): its
  stored ids are returned, or Redis confirms it stored nothing (``Unavailable``),
  or, if Redis cannot be asked within ``settle_within``, ``OutcomeUnknown``.
* Live events arrive on ONE pub/sub connection per process (the live link,
  brokers/redis_link.py), one Redis channel per livefeed channel that has local
  subscribers. A supervisor task owns it: it pings when the link is idle to notice
  a dead peer, and on any failure reports the outage, backs off with full jitter,
  reconnects, re-subscribes every held channel and reports recovery (the hub then
  catches up from history).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from livefeed.backoff import Backoff
from livefeed.brokers.base import (
    Broker,
    HistoryPage,
    PresenceEntries,
    PresenceStore,
    Published,
)
from livefeed.brokers.redis_layout import (
    PRESENCE_READ_LUA,
    PRESENCE_WRITE_LUA,
    PUBLISH_LUA,
    SETTLE_LUA,
    SETTLE_WITHIN,
    SINCE_LUA,
    Layout,
    Settling,
    database_of,
    new_operation,
    parse_presence,
    parse_published,
    presence_args,
    publish_args,
    refusal,
)
from livefeed.brokers.redis_link import (
    CommandLink,
    Endpoint,
    LinkError,
    LiveLink,
    NotSent,
    command,
)
from livefeed.envelope import Event
from livefeed.errors import BrokerError, Unavailable
from livefeed.events import PreparedBatch
from livefeed.history import IdKey, format_id, is_recoverable, parse_id
from livefeed.types import FIREHOSE, TOOL_PATTERN

log = logging.getLogger("livefeed.broker")

IDLE_PING_AFTER = 5.0  # seconds without traffic before the reader pings Redis
PONG_DEADLINE = 5.0  # seconds a ping may go unanswered before the link is presumed dead
STABLE_AFTER = 10.0  # a link that lasted this long resets the reconnect backoff
CLOSE_WITHIN = 2.0  # seconds any one step of closing may take (a dead Redis can hang it)
CONNECT_WITHIN = 2.0  # seconds a raw link may take to connect and hand-shake


def connect(url: str, **options: Any) -> aioredis.Redis:
    """A client whose commands fail fast and are never retried behind our back."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=2.0,
        **options,
    )


# What envelope_tail builds, up to the data: checked once per live message and per
# history entry, so that what another writer (or an older version) got wrong is dropped
# at the door, not in the middle of a fan-out (Event.ts reads the number after "ts").
_TAIL = rb',"kind":"(?:story|activity)","ts":-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?,"data":'
_TOOL = TOOL_PATTERN.pattern.encode()
# A live message: "<id> <tool> <tail>".
_MESSAGE = re.compile(rb"([^ ]+) (" + _TOOL + rb") (?=" + _TAIL + rb")")
_ENTRY_TAIL = re.compile(_TAIL)
_ENTRY_TOOL = re.compile(_TOOL)


def _entry_event(channel: str, entry: Any) -> Event:
    """A stream entry as redis-py parses it (id, {field: value}) or as a script returns
    it (id, [field, value, ...]). Raises KeyError or ValueError if it is not one of ours."""
    event_id, fields = entry
    values = (
        fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
    )
    tail = values[b"d"]
    if _ENTRY_TAIL.match(tail) is None or not tail.endswith(b"}"):
        raise ValueError("not an envelope tail")
    if channel == FIREHOSE:
        tool = values[b"o"]
        if _ENTRY_TOOL.fullmatch(tool) is None:
            raise ValueError("not a tool")
        return Event(channel, tool.decode(), event_id.decode(), tail)
    return Event(channel, channel, event_id.decode(), tail)


def _entry_events(channel: str, entries: Any) -> list[Event]:
    """The events of stream entries, skipping (with a warning) any that is malformed."""
    events = []
    skipped = []
    for entry in entries:
        try:
            events.append(_entry_event(channel, entry))
        except (KeyError, ValueError):
            skipped.append(entry[0])
    if skipped:
        log.warning(
            "skipped %d malformed entries in the history of %s, the first %r",
            len(skipped),
            channel,
            skipped[0],
        )
    return events


class RedisBroker(Broker, PresenceStore):
    def __init__(
        self,
        url: str,
        prefix: str = "livefeed:",
        history_size: int = 1000,
        idempotency_ttl: int = 600,
        *,
        timeout: float = 5.0,
        settle_within: float = SETTLE_WITHIN,
    ) -> None:
        super().__init__()
        self._history_size = history_size
        self._idempotency_ttl = idempotency_ttl
        self._settle_within = settle_within
        self._redis = connect(url, socket_timeout=timeout)
        self._layout = Layout(prefix, database_of(self._redis.connection_pool))
        self._endpoint = Endpoint.from_url(url)
        self._publish_sha = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest()
        self._timeout = timeout
        # The publish script's own connection (see redis_link.CommandLink), made on the
        # first publish and again after it ends.
        self._commands: CommandLink | None = None
        self._connecting = asyncio.Lock()
        self._closing = False
        self._settle_script = self._redis.register_script(SETTLE_LUA)
        self._since_script = self._redis.register_script(SINCE_LUA)
        self._presence_write = self._redis.register_script(PRESENCE_WRITE_LUA)
        self._presence_read = self._redis.register_script(PRESENCE_READ_LUA)
        self._held: set[str] = set()  # channels we want, across reconnects
        self._live: set[str] = set()  # channels Redis confirmed on the current link
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._resubscribing: set[str] = set()  # held channels not yet confirmed after connect
        self._link: LiveLink | None = None
        self._connected = False
        self._supervisor: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name="livefeed-redis-reader")

    async def close(self) -> None:
        """Stop reading and disconnect, within ``CLOSE_WITHIN`` seconds whatever Redis does."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._supervisor, CLOSE_WITHIN)
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._closing = True
        if self._commands is not None:
            self._commands.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._redis.aclose(), CLOSE_WITHIN)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not answer: {exc}") from None

    # Publishing and history -------------------------------------------------

    async def publish(self, batch: PreparedBatch, ts: float) -> Published:
        operation = new_operation()
        args = publish_args(
            self._layout, self._history_size, self._idempotency_ttl, batch, ts, operation
        )
        link = await self._command_link()
        lost: Exception
        try:
            reply = await self._run_publish(link, args)
        except NotSent as exc:  # nothing reached Redis (or only an EVALSHA it refused)
            raise Unavailable(f"Redis did not accept the publish: {exc}") from None
        except TimeoutError as exc:  # late: Redis busy, or the link dead without a word
            # New publishes get a new link; the calls waiting on this one keep it until
            # each is answered or gives up, as each would on a connection of its own.
            link.retire()
            lost = exc
        except LinkError as exc:  # sent, and the link ended before its reply
            lost = exc
        else:
            if not isinstance(reply, hiredis.ReplyError):
                return parse_published(reply)
            error = refusal(reply)  # answered: nothing was written
            if isinstance(error, BrokerError):  # an operator must fix Redis's data
                log.error("a publish was refused: %s", error.message)
            raise error
        return await self._settle_publish(operation, lost)

    async def _command_link(self) -> CommandLink:
        """The connected command link, connected anew if it ended. A failure here means
        nothing was sent: ``Unavailable``."""
        link = self._commands
        if link is not None and link.usable:
            return link
        async with self._connecting:  # concurrent publishes share one attempt
            link = self._commands
            if link is None or not link.usable:
                if self._closing:
                    raise Unavailable("the broker is closed")
                try:
                    link = await CommandLink.open(self._endpoint, CONNECT_WITHIN)
                except LinkError as exc:
                    raise Unavailable(f"Redis did not accept the publish: {exc}") from None
                if self._closing:  # closed while this connected: nobody would close it
                    link.close()
                    raise Unavailable("the broker is closed")
                self._commands = link
        return link

    async def _run_publish(self, link: CommandLink, args: list[Any]) -> Any:
        """The script's reply (an error reply as a value). Raises ``NotSent`` when it
        never reached Redis, ``LinkError`` or ``TimeoutError`` when it was sent and its
        reply is lost or late."""
        async with asyncio.timeout(self._timeout):
            reply = await link.call(command("EVALSHA", self._publish_sha, 0, *args))
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
                # refused, not run (a restarted or flushed Redis): send the script itself
                reply = await link.call(command("EVAL", PUBLISH_LUA, 0, *args))
        return reply

    async def _settle_publish(self, operation: str, lost: Exception) -> Published:
        """Learn whether a publish whose reply was lost was stored, making sure that if
        it was not, it never will be; or raise ``OutcomeUnknown`` after trying for
        ``settle_within`` seconds."""
        loop = asyncio.get_running_loop()
        settling = Settling(self._layout, operation, lost, self._settle_within, loop.time())
        while True:
            try:
                stored = await self._settle_script(args=settling.args)
            except (RedisError, OSError) as exc:
                await asyncio.sleep(settling.wait_after(exc, loop.time()))
            else:
                return settling.verdict(stored)

    async def history(self, channel: str, limit: int, since: IdKey | None = None) -> HistoryPage:
        stream = self._layout.stream(channel)
        try:
            if since is None:
                newest: Any = await self._redis.xrevrange(stream, count=limit) if limit > 0 else []
                return HistoryPage(_entry_events(channel, reversed(newest)))
            reply = await self._since_script(
                args=[stream, self._layout.trimmed(channel), format_id(since), limit]
            )
            last, trimmed, first, entries = reply or (b"", b"0-0", b"", [])
            recovered = is_recoverable(
                since,
                parse_id(first.decode()),
                parse_id(last.decode()),
                parse_id(trimmed.decode()) or (0, 0),
            )
            if not recovered:
                entries = await self._redis.xrange(stream, count=limit)  # from the oldest kept
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not answer the history read: {exc}") from None
        return HistoryPage(_entry_events(channel, entries), recovered)

    # Presence -----------------------------------------------------------------

    async def write(self, process: str, entries: PresenceEntries, ttl: float) -> None:
        if not entries:
            return
        args = presence_args(self._layout.prefix, process, entries, int(ttl * 1000))
        try:
            await self._presence_write(args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not take the presence update: {exc}") from None

    async def read(self, tools: list[str]) -> dict[str, PresenceEntries]:
        if not tools:
            return {}
        args: list[str | int] = [self._layout.prefix, *tools]
        try:
            reply = await self._presence_read(args=args)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis did not answer the presence read: {exc}") from None
        return parse_presence(tools, reply)

    # Live events ------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._held.add(channel)
        if channel in self._live:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        try:
            if self._link is not None:
                # If the link fails first, the supervisor re-subscribes every held channel.
                self._link.subscribe(self._layout.channel(channel))
            await future
        finally:
            waiting = self._waiters.get(channel)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:  # cancelled (left during an outage): keep no empty list
                    del self._waiters[channel]

    async def unsubscribe(self, channel: str) -> None:
        self._held.discard(channel)
        self._live.discard(channel)
        self._settle(channel)
        if self._link is not None:
            self._link.unsubscribe(self._layout.channel(channel))

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            log.info("redis live link %s", "up" if connected else "down")
            self.on_connection(connected)

    async def _supervise(self) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self._read_until_failure()
            except LinkError as exc:  # how open() and _watch() report every failure
                log.warning("redis live link failed: %s", exc or type(exc).__name__)
            except Exception:  # a bug here must not end live delivery for good
                log.exception("redis reader crashed; reconnecting")
            self._set_connected(False)
            if loop.time() - started > STABLE_AFTER:
                backoff.reset()
            self.reconnects += 1
            await asyncio.sleep(backoff.next_delay())

    async def _read_until_failure(self) -> None:
        link = await LiveLink.open(
            self._endpoint, self._deliver, self._on_subscribed, CONNECT_WITHIN
        )
        try:
            self._link = link
            self._resubscribing = set(self._held)
            if self._resubscribing:
                link.subscribe(*(self._layout.channel(c) for c in self._resubscribing))
            else:
                self._set_connected(True)
            raise await self._watch(link)
        finally:
            self._link = None
            self._live.clear()
            link.close()

    @staticmethod
    async def _watch(link: LiveLink) -> LinkError:
        """Ping the link when it has been quiet; return why it ended."""
        loop = asyncio.get_running_loop()
        ping_sent: float | None = None
        while not link.closed.done():
            await asyncio.wait([link.closed], timeout=1.0)
            now = loop.time()
            if ping_sent is not None and link.last_traffic < ping_sent:
                if now - ping_sent > PONG_DEADLINE:
                    return LinkError("Redis did not answer a ping on the live link")
            elif now - link.last_traffic > IDLE_PING_AFTER:
                link.ping()
                ping_sent = now
        return link.closed.result()

    def _on_subscribed(self, redis_channel: bytes) -> None:
        channel = self._layout.channel_name(redis_channel)
        if channel is not None and channel in self._held:
            self._confirm(channel)

    def _confirm(self, channel: str) -> None:
        self._live.add(channel)
        for future in self._waiters.pop(channel, []):
            if not future.done():
                future.set_result(None)
        self._settle(channel)

    def _settle(self, channel: str) -> None:
        """Count ``channel`` as done re-subscribing; the link is up once all are."""
        if channel in self._resubscribing:
            self._resubscribing.discard(channel)
            if not self._resubscribing and self._link is not None:
                self._set_connected(True)

    def _deliver(self, redis_channel: bytes, data: bytes) -> None:
        channel = self._layout.channel_name(redis_channel)
        if channel is None or channel not in self._live:
            return
        try:
            shape = _MESSAGE.match(data)
            if shape is None or not data.endswith(b"}"):
                raise ValueError("not <id> <tool> <envelope tail>")
            event = Event(channel, shape[2].decode(), shape[1].decode(), data[shape.end() :])
        except ValueError as exc:  # Event refuses an id beyond what Redis can issue
            log.warning(
                "dropped a malformed message on %s (%s): %r", redis_channel[:100], exc, data[:100]
            )
            return
        self.on_event(event)
