"""The hub: channel -> local subscribers, one broker subscription per channel, fan-out.

An event runs: broker reader -> :meth:`Hub.on_event` -> the channel's batch for
this pass of the event loop -> at the end of the pass, each live subscriber's
``writer`` (the batch's WebSocket bytes sent straight on its socket) or, when it has
none right now, its ``sink``, which only writes or enqueues. Every subscriber gets the
same :class:`Batch` (so the same bytes: a burst of events is one joined write per
connection, joined once). Nothing here awaits per subscriber.

Joining with a replay is gap-free (habit 7): the subscriber is parked in the
channel's ``pending`` map, where live events are buffered for it, *before* history
is read; :meth:`Hub.go_live` then merges the replay with the buffer (pure, in
:mod:`livefeed.history`) and moves it to ``live`` in one synchronous step.

When the broker's live link drops, every channel holds its live events; when the
link is back, the hub reads each channel's history after the last event it fanned
out and delivers what was missed before the held events, so subscribers see no gap.
A channel that opens behind its history (events already stored but still on their
way over the link, after one was fanned out) catches up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Callable, Coroutine
from itertools import repeat
from typing import Any, NamedTuple, Protocol

from livefeed import metrics
from livefeed.brokers.base import Broker, HistoryPage
from livefeed.envelope import Batch, Event
from livefeed.errors import Unavailable
from livefeed.history import IdKey, merge
from livefeed.protocol import CloseCode
from livefeed.types import FIREHOSE

log = logging.getLogger("livefeed.hub")

RETRY_EVERY = 0.5  # seconds between history reads while the broker is away
WARN_EVERY = 60.0  # seconds between warnings of a history read failing with the link up


class Writer(NamedTuple):
    """How a batch's WebSocket bytes go straight to one connection: ``send`` hands them
    to the socket and returns how many it took (an ``OSError`` means none: the socket
    is full, reset or closed); ``rest(data, taken)`` then takes care of the rest, in
    order (buffers it, or drops it if the connection is closing). One C call per
    subscriber while its socket keeps up, no Python frame."""

    send: Callable[[bytes], int]
    rest: Callable[[bytes, int], None]


class Subscriber(Protocol):
    @property
    def sink(self) -> Callable[[Batch], None]:
        """Takes a batch of live events; must not block or await."""

    @property
    def writer(self) -> Writer | None:
        """Sends a batch's :attr:`Batch.ws_bytes` on the connection, while that is all
        :attr:`sink` would do with the batch; else None. When it changes, the
        subscriber calls :meth:`Hub.refresh` for each of its channels."""

    def close(self, code: int, reason: str) -> None:
        """End the subscriber's connection (it then leaves its channels)."""


class _Fanout(NamedTuple):
    """A channel's live subscribers as the fan-out walks them: the writers' ``send``
    and ``rest`` in two parallel tuples (a pass touches only the ``send`` of each
    subscriber whose socket keeps up), and the sinks."""

    sends: tuple[Callable[[bytes], int], ...]
    rests: tuple[Callable[[bytes, int], None], ...]
    sinks: tuple[Callable[[Batch], None], ...]


class _Channel:
    __slots__ = (
        "catchup",
        "fanout",
        "held",
        "last_key",
        "name",
        "pending",
        "queued",
        "ready",
        "tick",
        "waiters",
        "writers",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        # Live subscribers, by how they take a batch: its WebSocket bytes sent straight
        # on their socket (a call without the sink's Python frame), or their sink.
        self.writers: dict[Subscriber, Writer] = {}
        self.queued: dict[Subscriber, Callable[[Batch], None]] = {}
        # Both as tuples for the fan-out (see _Fanout), rebuilt lazily so that joining
        # stays O(1) when thousands connect at once.
        self.fanout: _Fanout | None = None
        self.tick: list[Event] = []  # fanned out in this pass, not yet handed over
        self.pending: dict[Subscriber, list[Event]] = {}  # buffers while a replay is read
        self.ready: asyncio.Task[None] | None = None  # broker subscription + start cursor
        self.last_key: IdKey | None = None  # last event fanned out: order and catch-up cursor
        self.held: list[Event] | None = None  # not None while recovering from an outage
        self.catchup: asyncio.Task[None] | None = None
        # go_live calls waiting for the live stream to reach an id they already sent
        self.waiters: list[tuple[IdKey, asyncio.Future[None]]] = []

    def live(self) -> int:
        return len(self.writers) + len(self.queued)

    def empty(self) -> bool:
        return not self.writers and not self.queued and not self.pending

    def add(self, subscriber: Subscriber) -> None:
        writer = subscriber.writer
        if writer is None:
            self.queued[subscriber] = subscriber.sink
        else:
            self.writers[subscriber] = writer
        self.fanout = None

    def remove(self, subscriber: Subscriber) -> bool:
        """Take ``subscriber`` off live delivery; False if it was not live."""
        if self.writers.pop(subscriber, None) is None and self.queued.pop(subscriber, None) is None:
            return False
        self.fanout = None
        return True

    def route(self) -> _Fanout:
        writers = self.writers.values()
        self.fanout = _Fanout(
            tuple(writer.send for writer in writers),
            tuple(writer.rest for writer in writers),
            tuple(self.queued.values()),
        )
        return self.fanout


class Hub:
    def __init__(self, broker: Broker, history_size: int, buffer_limit: int = 1000) -> None:
        self._broker = broker
        self._history_size = history_size
        self._buffer_limit = buffer_limit  # live events parked for one replaying subscriber
        self._channels: dict[str, _Channel] = {}
        self._dirty: list[_Channel] = []  # channels with a tick batch to hand over
        self._flush_scheduled = False
        # Pacing: after a hand-over that took d seconds, the next one starts no sooner
        # than d later. Idle or lightly loaded, every event goes out at the end of the
        # loop pass it arrived in; under load, the events that arrive meanwhile go out
        # together, one joined write per connection. Measured (1,000 subscribers, this
        # VM): one write costs ~8 us of kernel time whatever its size, so 2 events per
        # write cost 5.2 us per delivery and 4 cost 2.9 us, against 9.8 us one by one.
        self._next_flush_at = 0.0
        # The loop the channels live on, bound when one is made. The per-event path
        # reads it here: asyncio.get_running_loop() makes a getpid() system call on
        # Python 3.11 (a fork check): two per event before this, ~10 % of the server's
        # busy samples (py-spy, many channels at 20k deliveries/s).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The broker's live link, as on_connection last said (None: not said yet).
        self._broker_up: bool | None = None
        broker.on_event = self.on_event
        broker.on_connection = self._on_connection

    @property
    def channels(self) -> dict[str, int]:
        """Each channel with local subscribers, and how many."""
        return {name: ch.live() + len(ch.pending) for name, ch in self._channels.items()}

    # Fan-out -----------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        channel = self._channels.get(event.channel)
        if channel is None:
            return
        if channel.held is not None:
            channel.held.append(event)
            return
        self._fan_out(channel, event)

    def _fan_out(self, channel: _Channel, event: Event) -> None:
        if channel.last_key is not None and event.key <= channel.last_key:
            return  # already delivered (overlap between a catch-up read and live events)
        channel.last_key = event.key
        if channel.waiters:
            self._wake(channel)
        if channel.writers or channel.queued:
            if not channel.tick:
                self._dirty.append(channel)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    loop = self._loop
                    assert loop is not None  # bound when the channel was made
                    if loop.time() >= self._next_flush_at:
                        loop.call_soon(self._flush)
                    else:
                        loop.call_at(self._next_flush_at, self._flush)
            channel.tick.append(event)
        if channel.pending:
            too_slow = []
            for waiting, buffer in channel.pending.items():
                buffer.append(event)
                if len(buffer) > self._buffer_limit:
                    too_slow.append(waiting)
            for waiting in too_slow:  # closed after the loop: closing leaves the channel
                waiting.close(CloseCode.SLOW_CONSUMER, "fell behind while replaying history")

    def _flush(self) -> None:
        """Hand each channel's batch to its subscribers, then pace the next hand-over."""
        self._flush_scheduled = False
        started = time.perf_counter()
        dirty, self._dirty = self._dirty, []
        for channel in dirty:
            self._hand_over(channel)
        took = time.perf_counter() - started
        assert self._loop is not None  # (a flush follows an event on a channel)
        self._next_flush_at = self._loop.time() + took

    @staticmethod
    def _hand_over(channel: _Channel) -> None:
        events = channel.tick
        if not events:
            return
        channel.tick = []  # emptied whatever happens, or never dirty again
        try:
            batch = Batch(events)
            counts = metrics.FANOUT
            counts.deliveries += channel.live() * len(batch)
            if channel.name != FIREHOSE:  # each event once, not again on the firehose
                now = time.time()
                for event in batch.events:
                    counts.observe_latency(max(0.0, now - event.ts))
            data = batch.ws_bytes
        except Exception:  # no one has the batch: everyone resumes it from history
            log.exception("preparing a batch of channel %s failed", channel.name)
            for subscriber in [*channel.writers, *channel.queued]:
                subscriber.close(CloseCode.INTERNAL_ERROR, "internal error")
            return
        # A write that backs a socket up makes its subscriber refresh the channel
        # (writer -> sink) while this runs; that takes effect from the next batch.
        # A subscriber whose delivery fails (a bug) is closed to resume from history;
        # the others go on. (A `try` costs nothing until it catches, since Python 3.11.)
        sends, rests, sinks = channel.fanout or channel.route()
        size = len(data)
        # Every send in one C loop (list.extend over map): no bytecode and no Writer
        # tuple touched per subscriber. The loop stops at a send that raises; what it
        # took so far stays in `taken` (list.extend keeps it), so len(taken) is the
        # index of the one that raised, and the loop goes on after it.
        taken: list[int] = []
        calls = map(operator.call, sends, repeat(data))
        while True:
            try:
                taken.extend(calls)
                break
            except OSError:  # full, reset or closed: its rest() knows which, and what to do
                taken.append(0)
            except Exception:
                Hub._failed(channel, sends[len(taken)])
                taken.append(size)  # nothing more to do for it
        if taken.count(size) != len(taken):
            for index, took in enumerate(taken):
                if took != size:
                    try:
                        rests[index](data, took)
                    except Exception:
                        Hub._failed(channel, sends[index])
        for sink in sinks:
            try:
                sink(batch)
            except Exception:
                Hub._failed(channel, sink)

    @staticmethod
    def _failed(channel: _Channel, deliver: Callable[..., Any]) -> None:
        log.exception("a delivery on channel %s failed; closing its subscriber", channel.name)
        # (copies: closing a subscriber changes the maps)
        failed = [s for s, writer in channel.writers.items() if writer.send == deliver]
        failed += [s for s, sink in channel.queued.items() if sink == deliver]
        for subscriber in failed:
            subscriber.close(CloseCode.INTERNAL_ERROR, "internal error")

    # Joining and leaving -----------------------------------------------------

    async def join(
        self, name: str, subscriber: Subscriber, history: int = 0, since: IdKey | None = None
    ) -> HistoryPage:
        """Park ``subscriber`` on channel ``name`` and read what it should replay.

        Must be followed by :meth:`go_live` (or :meth:`leave`) once the replay is
        sent. Waits, and keeps retrying history reads, while the broker is away.
        """
        channel = self._channel(name)
        channel.pending[subscriber] = []
        try:
            assert channel.ready is not None
            await asyncio.shield(channel.ready)
            if since is not None:
                return await self._read(name, self._history_size, since)
            if history > 0:
                return await self._read(name, history)
            return HistoryPage([])
        except BaseException:
            self.leave(name, subscriber)
            raise

    async def go_live(
        self, name: str, subscriber: Subscriber, after: IdKey | None
    ) -> tuple[list[Event], IdKey | None]:
        """Switch a parked subscriber to live delivery. Returns the live events buffered
        for it that are newer than ``after`` (the last id it sent, or its cursor), which
        it must send before anything else of this channel, and the channel's position:
        once those are sent, the subscriber has every event up to it.

        History can be ahead of the live stream (an event is read from Redis before
        its pub/sub message is here), so this first waits until the live stream has
        passed ``after``: what comes live afterwards is then all new to the subscriber.
        """
        channel = self._channels[name]
        if after is not None and (channel.last_key is None or channel.last_key < after):
            reached = asyncio.get_running_loop().create_future()
            channel.waiters.append((after, reached))
            try:
                await reached
            finally:
                if not reached.done():
                    channel.waiters.remove((after, reached))
        # Live subscribers get this pass's events first: the newcomer has them buffered.
        self._hand_over(channel)
        buffered = channel.pending.pop(subscriber)
        channel.add(subscriber)
        return merge([], buffered, after), channel.last_key

    def refresh(self, name: str, subscriber: Subscriber) -> None:
        """``subscriber`` got or lost its writer: from the next batch of channel ``name``
        on, it takes batches the other way (if it is live there)."""
        channel = self._channels.get(name)
        if channel is not None and channel.remove(subscriber):
            channel.add(subscriber)

    @staticmethod
    def _wake(channel: _Channel) -> None:
        assert channel.last_key is not None
        waiting = []
        for key, future in channel.waiters:
            if key <= channel.last_key:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((key, future))
        channel.waiters = waiting

    def leave(self, name: str, subscriber: Subscriber) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        channel.remove(subscriber)
        channel.pending.pop(subscriber, None)
        if channel.empty():
            del self._channels[name]
            for task in (channel.ready, channel.catchup):
                if task is not None:
                    task.cancel()
            self._spawn(self._broker.unsubscribe(name))

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.get(name)
        if channel is None:
            self._loop = asyncio.get_running_loop()
            channel = self._channels[name] = _Channel(name)
            if self._broker_up is False:  # made during an outage: hold until the catch-up
                channel.held = []
            channel.ready = asyncio.create_task(self._open(channel), name=f"open {name}")
        return channel

    async def _open(self, channel: _Channel) -> None:
        """Subscribe at the broker, then note where the channel's history stands, so a
        later outage can be caught up even if no event arrived before it."""
        await self._broker.subscribe(channel.name)
        page = await self._read(channel.name, 1)
        newest = page.events[-1].key if page.events else (0, 0)
        if channel.last_key is None:
            # Nothing fanned out yet: what history holds is older than anything a
            # subscriber waits for live (those that replay read history after this).
            channel.last_key = newest
            if channel.waiters:
                self._wake(channel)
        elif channel.last_key < newest and channel.held is None:
            # An event was fanned out (buffered for a parked subscriber) and history is
            # ahead of it: the events between are still on their way over the live link
            # (or were lost in an outage while this was opening). Hold live events and
            # deliver the gap from history first, as after an outage. If held is set, a
            # catch-up is running or will run when the link is back, from last_key too.
            self._hold(channel)

    async def covers(self, name: str, since: IdKey) -> bool:
        """Whether the kept history still has every event after ``since``."""
        return bool((await self._read(name, 1, since)).recovered)

    async def _read(self, name: str, limit: int, since: IdKey | None = None) -> HistoryPage:
        warn_at = 0.0
        while True:
            try:
                return await self._broker.history(name, limit, since)
            except Unavailable as exc:
                # With the link down the broker has said so; with it up, a read that
                # keeps failing (a key of the wrong type, say) would hang joins unseen.
                now = time.monotonic()
                if self._broker_up and now >= warn_at:
                    log.warning("history of %s unreadable, retrying: %s", name, exc.message)
                    warn_at = now + WARN_EVERY
                await asyncio.sleep(RETRY_EVERY)

    # Broker outages ----------------------------------------------------------

    def _on_connection(self, connected: bool) -> None:
        self._broker_up = connected
        metrics.BROKER_UP.set(1 if connected else 0)
        if not connected:
            metrics.BROKER_OUTAGES.inc()

        for channel in self._channels.values():
            if not connected:
                if channel.catchup is not None:
                    # Its read may answer with the link still down; what it holds and
                    # what the link misses until it is back go to the next catch-up.
                    channel.catchup.cancel()
                    channel.catchup = None
                if channel.held is None:
                    channel.held = []
            elif channel.held is not None:
                self._hold(channel)

    def _hold(self, channel: _Channel) -> None:
        """Hold the channel's live events and (re)start its catch-up, which ends the hold."""
        if channel.held is None:
            channel.held = []
        if channel.catchup is not None:
            channel.catchup.cancel()  # what it held stays held, for the new one
        channel.catchup = asyncio.create_task(
            self._catch_up(channel), name=f"catch up {channel.name}"
        )

    async def _catch_up(self, channel: _Channel) -> None:
        """Deliver from history what the live link missed after the last event fanned
        out, then the live events held meanwhile, and stop holding.

        Cancelled only when the link drops again, a newer catch-up takes over, or the
        channel ends: its held events then stay held for whoever takes over."""
        cursor = channel.last_key
        if cursor is None:
            # Still opening, nothing fanned out: no cursor to read after. Its subscribers
            # are parked and replay from history; _open compares what it reads with this.
            held, channel.held = channel.held or [], None
            for event in held:
                self._fan_out(channel, event)
            return
        try:
            page = await self._read(channel.name, self._history_size, cursor)
            missed = merge(page.events, channel.held or [], cursor)  # finally stops holding
            if not page.recovered:
                log.warning(
                    "channel %s lost events in a broker outage; its subscribers resume",
                    channel.name,
                )
                self._close_all(channel, "events were lost in a broker outage")
            log.info("channel %s caught up %d events", channel.name, len(missed))
            for event in missed:
                self._fan_out(channel, event)
        except Exception:
            # Not an outage (_read waits those out) but a bug or a corrupt key: holding
            # on would buffer every later event for ever. Its subscribers resume from
            # history, where nothing is lost.
            log.exception("catching up channel %s failed; its subscribers resume", channel.name)
            self._close_all(channel, "could not catch up after a broker outage")
        finally:
            if channel.catchup is asyncio.current_task():  # else cancelled: see above
                channel.held = None

    @staticmethod
    def _close_all(channel: _Channel, reason: str) -> None:
        for subscriber in [*channel.writers, *channel.queued, *channel.pending]:
            subscriber.close(CloseCode.GOING_AWAY, reason)

    # Lifecycle ---------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for channel in self._channels.values():
            for task in (channel.ready, channel.catchup):
                if task is not None:
                    task.cancel()
        self._channels.clear()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
