"""A fleet of subscribers: opened at a bounded rate, counted cheaply, a few probes timed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from benchmarks.wsclient import Dialect, State, Subscriber, open_stamped


@dataclass(frozen=True)
class Endpoint:
    """Where subscribers connect: a port and the WebSocket path for a tool."""

    port: int
    path_for: Callable[[str], str]


@dataclass
class ConnectStats:
    wanted: int
    ready: int = 0
    failed: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Subscriptions completed per second (connect + upgrade + subscribe)."""
        return self.ready / self.seconds if self.seconds > 0 else 0.0


class _Waiter:
    """Resolves one connection attempt: ready, or closed before being ready."""

    def __init__(self) -> None:
        self.future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def ready(self, _sub: Subscriber) -> None:
        if not self.future.done():
            self.future.set_result(True)


def probe_indices(size: int, probes: int) -> frozenset[int]:
    """``probes`` connection indices spread evenly over ``size``: the middles of
    ``probes`` equal slices (10, 30, 50, 70 and 90 % for five).

    Middles, so that the places are the same counted from either end: a server that
    writes in the order connections came and one that writes the newest first (Nchan)
    are timed at the same points of their fan-outs. The extra ``+ i`` moves each probe
    on by one tool and one endpoint (both assigned round robin), so that probes also
    cover many tools and every server rather than landing on the same one each stride.
    Too few connections to spread them (a smoke run): the first ones.
    """
    probes = min(probes, size)
    stride = size // probes if probes else 0
    if stride <= probes:
        return frozenset(range(probes))
    return frozenset(i * stride + stride // 2 + i for i in range(probes))


def end_indices(size: int, probes: frozenset[int]) -> tuple[int, ...]:
    """The first and the last connection, unless already probes: one of them is the
    head of each fan-out, whichever order a server writes in. None in a fleet without
    probes (idle memory, connect rate)."""
    if not probes:
        return ()
    return tuple(index for index in dict.fromkeys((0, size - 1)) if index not in probes)


def wake_threshold(index: int, size: int, nbytes: int) -> int:
    """Connection ``index``'s SO_RCVLOWAT for a mean of ``nbytes``: spread evenly over
    [nbytes / 2, 3 * nbytes / 2) by connection, so their wake-ups spread over many
    events (~47 for 16 KiB and ~350-byte events) instead of all landing on one."""
    if nbytes <= 1:
        return 1
    return nbytes // 2 + nbytes * index // max(size, 1)


class Fleet:
    """N subscribers over ``tools`` (round robin) and ``endpoints`` (round robin).

    ``probes`` connections, spread evenly over the connection order, are probes: they
    parse every frame and record publish-to-receive latency; the rest only count
    frames. Spread, because a server writes an event to its subscribers one after the
    other, in the order they came or the reverse: probes opened first would only ever
    see the head of each fan-out (or the tail), and the p99 would flatter whoever
    writes in that order. The first and the last connection are probes of their own,
    kept apart (``end_latencies``): whichever of them a server writes first gives the
    head of its fan-out, the publish path and one write.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        tools: Sequence[str],
        dialect: Dialect,
        *,
        acks: bool,
        size: int,
        probes: int,
    ) -> None:
        self.endpoints, self.tools, self.dialect = list(endpoints), list(tools), dialect
        self.acks, self.size = acks, size
        self.probe_indices = probe_indices(size, probes)
        self.subscribers: list[Subscriber] = []
        self.latencies: list[tuple[float, float]] = []  # probes: (arrival, read) - publish
        self.end_latencies: dict[int, list[tuple[float, float]]] = {
            index: [] for index in end_indices(size, self.probe_indices)
        }

    def tool_of(self, index: int) -> str:
        return self.tools[index % len(self.tools)]

    def subscribers_per_tool(self) -> dict[str, int]:
        """Live, subscribed connections per tool (what one publish to that tool should reach)."""
        counts: Counter[str] = Counter()
        for sub in self.subscribers:
            if sub.state is State.READY:
                counts[sub.tool] += 1
        return dict(counts)

    async def connect(self, rate: float, in_flight: int, patience: float) -> ConnectStats:
        """Open ``size`` subscriptions at most ``rate``/s with at most ``in_flight`` pending.

        Each attempt is bounded by ``patience`` seconds; failures are counted, not retried.
        """
        stats = ConnectStats(self.size)
        gate = asyncio.Semaphore(in_flight)
        reasons: Counter[str] = Counter()
        last_ready = start = time.monotonic()

        async def attempt(index: int) -> None:
            nonlocal last_ready
            try:
                ok, reason = await self._open(index, patience)
            finally:
                gate.release()
            if ok:
                stats.ready += 1
                last_ready = time.monotonic()
            else:
                stats.failed += 1
                reasons[reason[:120]] += 1

        tasks = []
        for index in range(self.size):
            due = start + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(attempt(index)))
        await asyncio.gather(*tasks)
        stats.seconds = max(last_ready - start, 1e-6)
        stats.reasons = [f"{count}x {reason}" for reason, count in reasons.most_common(3)]
        return stats

    async def _open(self, index: int, patience: float) -> tuple[bool, str]:
        waiter = _Waiter()
        endpoint = self.endpoints[index % len(self.endpoints)]
        tool = self.tool_of(index)
        spread = self.latencies if index in self.probe_indices else None
        latencies = self.end_latencies.get(index, spread)  # None: a counting connection
        subscriber = Subscriber(
            f"127.0.0.1:{endpoint.port}",
            endpoint.path_for(tool),
            self.dialect,
            tool,
            acks=self.acks,
            probe=latencies is not None,
            on_ready=waiter.ready,
            latencies=latencies,
        )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(patience):
                if subscriber.probe:
                    await open_stamped(endpoint.port, subscriber)
                else:
                    await loop.create_connection(lambda: subscriber, "127.0.0.1", endpoint.port)
                self.subscribers.append(subscriber)
                while not waiter.future.done():
                    if subscriber.state is State.CLOSED:
                        return False, subscriber.close_reason or "closed"
                    await asyncio.wait([waiter.future], timeout=0.05)
        except TimeoutError:
            subscriber.close()
            return False, f"timeout ({subscriber.close_reason or subscriber.state.name})"
        except OSError as exc:
            return False, repr(exc)
        return True, ""

    # -- counting ---------------------------------------------------------------------

    def coalesce(self, nbytes: int) -> None:
        """Set SO_RCVLOWAT on the counting connections: wake for ``nbytes`` queued, not 1.

        While a step publishes, a counting connection is woken once per ~``nbytes`` (many
        frames) instead of once per frame, which cuts the generator's CPU per delivery
        several-fold; the server's side of the socket is unchanged. Probes keep 1 byte so
        latency is unaffected. Setting 1 again wakes every connection holding less
        (Linux's tcp_set_rcvlowat signals readiness), so counts are complete after a drain.

        The thresholds are staggered over connections, from ``nbytes / 2`` to
        ``3 * nbytes / 2``: with one threshold every counting connection crossed it on
        the same event, and the generator spent tens of milliseconds reading 1,000
        sockets while the probes' frames waited behind them, which added ~10 ms to
        every peer's p99 (a generator artefact, not the server's latency).
        """
        size = len(self.subscribers)
        for index, sub in enumerate(self.subscribers):
            sub.set_rcvlowat(1 if sub.probe else wake_threshold(index, size, nbytes))

    def probe_counts(self) -> dict[Subscriber, int]:
        """The frames each live probe has had so far (a mark for `probes_caught_up`)."""
        return {
            sub: sub.count for sub in self.subscribers if sub.probe and sub.state is State.READY
        }

    async def probes_caught_up(
        self, marks: Mapping[Subscriber, int], published: Sequence[int], cap: float
    ) -> float:
        """Wait until every probe marked has had what its tool was sent since the mark
        (``published`` counts per tool, in ``self.tools`` order), at most ``cap`` s.

        A step ends when the publisher says so, and the generator then walks /proc and
        wakes every counting connection at once: done while the last publish was still
        on its way, that work on the load core had held it there (Redis's message to the
        server is received on that core), and each step's last fan-out came 2-4 ms late.
        """
        wanted = {sub: mark + published[self.tools.index(sub.tool)] for sub, mark in marks.items()}
        start = time.monotonic()
        while time.monotonic() - start < cap:
            if all(sub.count >= want or sub.state is State.CLOSED for sub, want in wanted.items()):
                break
            await asyncio.sleep(0.001)
        return time.monotonic() - start

    def delivered(self) -> int:
        return sum(sub.count for sub in self.subscribers)

    def closed(self) -> int:
        return sum(1 for sub in self.subscribers if sub.state is State.CLOSED)

    def min_count(self) -> int:
        """The fewest frames any live, ready subscriber has had (for the sync barrier)."""
        live = [sub.count for sub in self.subscribers if sub.state is State.READY]
        return min(live) if live else 0

    def close_reasons(self) -> list[str]:
        reasons = Counter(
            sub.close_reason or "?" for sub in self.subscribers if sub.state is State.CLOSED
        )
        return [f"{count}x {reason[:100]}" for reason, count in reasons.most_common(3)]

    def take_latencies(self) -> tuple[list[float], list[float], float | None]:
        """The probes' latencies since the last call: at arrival and when read; and the
        head's p99 (at arrival), the lower of the two end connections' p99s, or None
        without both."""
        taken, self.latencies[:] = list(self.latencies), []
        ends = [[arrival for arrival, _ in taken_end] for taken_end in self.end_latencies.values()]
        for taken_end in self.end_latencies.values():
            taken_end.clear()
        head = min(percentile(end, 0.99) for end in ends) if len(ends) == 2 and all(ends) else None
        return [arrival for arrival, _ in taken], [read for _, read in taken], head

    async def wait_quiet(self, quiet: float, cap: float) -> float:
        """Wait until the delivered count holds still for ``quiet`` s (at most ``cap`` s)."""
        start = time.monotonic()
        last, since = self.delivered(), time.monotonic()
        while time.monotonic() - start < cap:
            await asyncio.sleep(0.1)
            now = self.delivered()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return time.monotonic() - start

    def close(self) -> None:
        for sub in self.subscribers:
            sub.close()
        self.subscribers.clear()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (0 for an empty list)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]
