"""Presence: who watches each tool, across every process, cheaply.

Each process keeps a local tally per tool (subscriptions, and the authenticated
handles among them). Joins and leaves only touch that tally. Every ``FLUSH_EVERY``
seconds the process writes the tools whose tally changed to the
:class:`PresenceStore` (one batched write, whatever the churn), and every
``REFRESH_EVERY`` seconds it renews all its entries; an entry not renewed within
``TTL`` expires, so the viewers of a process that died without saying goodbye fade
by themselves (habit 8). Deadlines are kept on the store's clock (Redis's own), so
hosts whose clocks disagree do not expire each other's entries.

Reads merge the store's entries of *other* processes (cached, refreshed at most
every ``FRESH_FOR`` seconds, and dropped once older than that) with this process's
live tally. One store read per tool is in flight at a time, run as a task of its own
and shared by every caller that needs it. Every ``PUSH_EVERY`` seconds the tools that
have subscribers asking for ``presence`` frames are re-read, and a frame is pushed,
encoded once, to those subscribers when the state changed, and to a subscription
that started asking since the last push even if it did not: at most one frame per
second per tool, never one per join.

A change made on another process shows here within about 1.25 s in frames (its
flush, then our next push) and 0.75 s in reads (its flush, then our cached read's
age), plus a few Redis round trips: inside the contract's 2 s. Non-guarantee: counts
are per subscription, so one browser subscribed twice counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from livefeed import protocol
from livefeed.brokers.base import PresenceEntries, PresenceStore
from livefeed.errors import Unavailable

log = logging.getLogger("livefeed.presence")

# A change reaches the store within FLUSH_EVERY (one batched write, and only when a
# tally changed), and the frames of other processes within PUSH_EVERY after that (a
# push always reads the store anew); HTTP reads and subscribes reuse a read FRESH_FOR.
# Worst case ~1.25 s for frames, ~0.75 s for reads, plus a few Redis round trips: the
# contract's "within 2 s" with room for a busy loop.
FLUSH_EVERY = 0.25  # seconds between writes of changed tallies
PUSH_EVERY = 1.0  # seconds from the end of one frame push to the next (at most 1/s/tool)
REFRESH_EVERY = 5.0  # seconds between renewals of every entry this process owns
# An entry not renewed within this long expires: a dead process's viewers go within
# 15-20 s (plus a read cycle), inside the contract's 30 s with room for a slow machine.
TTL = 20.0

# Seconds shutdown waits to withdraw this process's entries. They expire after TTL
# anyway; a Redis that stopped answering must not hold the exit (SIGTERM: 10 s in all).
WITHDRAW_WITHIN = 1.0
FRESH_FOR = 0.5  # a cached read of other processes' entries is reused this long
MAX_USERS = 100

State = tuple[int, list[str]]


class Watcher(Protocol):
    def presence_frame(self, tool: str, frame: bytes) -> None:
        """Queue a ``presence`` frame; never blocks."""


class _Tally:
    __slots__ = ("count", "handles")

    def __init__(self) -> None:
        self.count = 0
        self.handles: Counter[str] = Counter()


def _retrieve(read: asyncio.Task[dict[str, PresenceEntries]]) -> None:
    """Mark a shared read's failure as seen: its callers may all have gone."""
    if not read.cancelled():
        read.exception()


class Presence:
    def __init__(self, store: PresenceStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.process = secrets.token_hex(8)  # this process's entry name in the store
        self._store = store
        self._clock = clock
        self._local: dict[str, _Tally] = {}
        self._dirty: set[str] = set()
        # tool -> (read at, other processes' entries), oldest read first
        self._others: OrderedDict[str, tuple[float, PresenceEntries]] = OrderedDict()
        self._reads: dict[str, asyncio.Task[dict[str, PresenceEntries]]] = {}  # in flight
        self._watchers: dict[str, dict[Watcher, None]] = {}
        # Watchers since the last push of their tool: they get its state at the next
        # push even if it did not change (else a subscription that asks for presence
        # on a tool others watch would wait for the next change to learn who is there).
        self._fresh: dict[str, dict[Watcher, None]] = {}
        self._pushed: dict[str, State] = {}
        self._task: asyncio.Task[None] | None = None

    # Local tally ---------------------------------------------------------------

    def join(self, tool: str, handle: str | None) -> None:
        tally = self._local.setdefault(tool, _Tally())
        tally.count += 1
        if handle:
            tally.handles[handle] += 1
        self._dirty.add(tool)

    def leave(self, tool: str, handle: str | None) -> None:
        tally = self._local.get(tool)
        if tally is None:
            return
        tally.count -= 1
        if handle:
            tally.handles[handle] -= 1
            if tally.handles[handle] <= 0:
                del tally.handles[handle]
        if tally.count <= 0:
            del self._local[tool]
        self._dirty.add(tool)

    def watch(self, tool: str, watcher: Watcher) -> None:
        self._watchers.setdefault(tool, {})[watcher] = None
        self._fresh.setdefault(tool, {})[watcher] = None

    def unwatch(self, tool: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(tool)
        if watchers is not None:
            watchers.pop(watcher, None)
            if not watchers:
                del self._watchers[tool]
                self._pushed.pop(tool, None)
        fresh = self._fresh.get(tool)
        if fresh is not None:
            fresh.pop(watcher, None)
            if not fresh:
                del self._fresh[tool]

    # Reads ---------------------------------------------------------------------

    def _merged(self, tool: str, others: PresenceEntries) -> State:
        count = 0
        users: set[str] = set()
        for process, (entry_count, handles) in others.items():
            if process != self.process:
                count += entry_count
                users.update(handles)
        tally = self._local.get(tool)
        if tally is not None:
            count += tally.count
            users.update(tally.handles)
        return count, sorted(users)[:MAX_USERS]

    async def _refresh(
        self, tools: list[str], fresh_for: float = FRESH_FOR
    ) -> dict[str, PresenceEntries]:
        """Other processes' entries for ``tools``: the cached ones read within
        ``fresh_for`` seconds, the others re-read, one read at a time per tool, shared
        by every caller waiting for it."""
        now = self._clock()
        found: dict[str, PresenceEntries] = {}
        stale: list[str] = []
        for tool in tools:
            cached = self._others.get(tool)
            if cached is not None and now - cached[0] < fresh_for:
                found[tool] = cached[1]
            else:
                stale.append(tool)
        wanted = [t for t in stale if t not in self._reads]
        if wanted:
            # The read is a task of its own, not the first caller's: cancelling that
            # caller (its connection closed) must not cancel the read the others share.
            read = asyncio.create_task(self._read(wanted), name="livefeed presence read")
            read.add_done_callback(_retrieve)
            for tool in wanted:
                self._reads[tool] = read
        for read in dict.fromkeys(self._reads[t] for t in stale):
            # shield: a caller cancelled while waiting leaves the read to the others.
            found.update(await asyncio.shield(read))
        return found

    async def _read(self, tools: list[str]) -> dict[str, PresenceEntries]:
        try:
            entries = await self._store.read(tools)
        finally:
            for tool in tools:
                self._reads.pop(tool, None)
        now = self._clock()
        self._forget_reads_before(now - FRESH_FOR)
        read = {tool: entries.get(tool, {}) for tool in tools}
        for tool, tool_entries in read.items():
            self._others[tool] = (now, tool_entries)
            self._others.move_to_end(tool)  # the cache stays in read order, oldest first
        return read

    def _forget_reads_before(self, cutoff: float) -> None:
        """Drop cached reads older than ``cutoff``. They would be re-read before use,
        and without this every tool name anyone asks about (GET /api/presence takes
        100 a request, without a token) stays in memory for good. Oldest first, so each
        entry costs O(1) to drop. Called only after a successful read, so during a
        store outage the entries read in the last ``FRESH_FOR`` before it stay, as the
        fallback of :meth:`state`; a tool read earlier counts this process only until
        the store is back."""
        while self._others:
            tool, (read_at, _) = next(iter(self._others.items()))
            if read_at >= cutoff:
                return
            del self._others[tool]

    async def state(self, tool: str) -> State:
        """Count and users of ``tool`` across every process. On a store outage, the
        last known entries of other processes are used."""
        try:
            others = (await self._refresh([tool]))[tool]
        except Unavailable:
            others = self._others.get(tool, (0.0, {}))[1]
        return self._merged(tool, others)

    async def states(self, tools: list[str]) -> dict[str, State]:
        """Like :meth:`state` for several tools; raises Unavailable if the store is away."""
        others = await self._refresh(tools)
        return {tool: self._merged(tool, others[tool]) for tool in tools}

    # The heartbeat -------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livefeed presence")

    async def _run(self) -> None:
        clock = self._clock
        renewed = flushed = pushed = clock()
        while True:
            due = min(flushed + FLUSH_EVERY, pushed + PUSH_EVERY)
            await asyncio.sleep(max(0.0, due - clock()))
            if clock() >= flushed + FLUSH_EVERY:
                renew = clock() - renewed >= REFRESH_EVERY
                if await self._step(self._flush(renew)) and renew:
                    renewed = clock()
                flushed = clock()
            if clock() >= pushed + PUSH_EVERY:
                await self._step(self._push())
                # From the end of a push: its frames went out then, so a tool's next
                # frame is at least PUSH_EVERY later, however long the reads take.
                pushed = clock()

    async def _step(self, step: Coroutine[Any, Any, None]) -> bool:
        """Run one heartbeat step; False if it failed (logged, and the heartbeat goes on)."""
        try:
            await step
            return True
        except Unavailable as exc:
            log.debug("presence heartbeat step skipped: %s", exc)
        except Exception:  # a bug here must not stop presence for good
            log.exception("presence heartbeat step failed")
        except asyncio.CancelledError:
            # Only close() ends the heartbeat. A CancelledError that is not ours
            # (a read another task cancelled) must not stop presence for good.
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            log.warning("presence heartbeat: a step was cancelled", exc_info=True)
        return False

    async def _flush(self, renew: bool) -> None:
        tools = set(self._local) if renew else set()
        tools |= self._dirty
        if not tools:
            return
        entries: PresenceEntries = {}
        for tool in tools:
            tally = self._local.get(tool)
            if tally is None:
                entries[tool] = (0, ())
            else:
                entries[tool] = (tally.count, tuple(sorted(tally.handles))[:MAX_USERS])
        # Taken before the write, not subtracted after it: a join or leave made while
        # the write is at the store marks its tool again, for the next flush to write.
        flushed, self._dirty = self._dirty, set()
        try:
            await self._store.write(self.process, entries, TTL)
        except BaseException:
            self._dirty |= flushed  # not written: write it next time
            raise

    async def _push(self) -> None:
        tools = list(self._watchers)
        if not tools:
            return
        others = await self._refresh(tools, fresh_for=0.0)  # a read in flight is shared
        for tool in tools:
            if tool not in self._watchers:  # its last watcher left during the read
                continue
            state = self._merged(tool, others[tool])
            fresh = self._fresh.pop(tool, {})
            if self._pushed.get(tool) != state:
                self._pushed[tool] = state
                to = list(self._watchers.get(tool, ()))
            elif fresh:  # unchanged: only the new watchers need it (unwatch drops theirs)
                to = list(fresh)
            else:
                continue
            frame = protocol.presence(tool, state[0], state[1])
            for watcher in to:
                watcher.presence_frame(tool, frame)

    async def close(self) -> None:
        """Stop the heartbeat and withdraw this process's entries, if the store takes
        that within ``WITHDRAW_WITHIN`` seconds (else they expire by themselves)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        withdrawn: PresenceEntries = {t: (0, ()) for t in set(self._local) | self._dirty}
        with contextlib.suppress(Unavailable, TimeoutError):
            await asyncio.wait_for(self._store.write(self.process, withdrawn, TTL), WITHDRAW_WITHIN)
