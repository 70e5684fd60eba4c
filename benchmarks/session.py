"""One scenario's moving parts: the server process(es), the publisher, and a measured step."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fleet import Fleet, percentile
from benchmarks.peers import REPO_ROOT, Context, Peer
from benchmarks.procs import (
    LOAD_CORE,
    SERVER_CORE,
    CoreMeter,
    Proc,
    backlog_drops,
    descendants,
    free_port,
    pinned,
    self_cpu_seconds,
    spawn,
    tree_cpu_seconds,
    tree_cpu_split,
    tree_memory_kib,
    wait_http_ok,
)

LOSS_LIMIT = 0.001  # a step with more than 0.1 % loss is not clean
P99_LIMIT = 1.0  # seconds
SERVER_SATURATED = 0.95  # share of one core
SERVER_CORE_FULL = 0.98  # the server core including softirq (loopback TCP on its behalf)
LOAD_SATURATED = 0.90  # the generator's core: above this a failed step says nothing of the server
COALESCE_BYTES = 16384  # counting connections wake per ~45 events while publishing
DRAIN_SHARE = 0.05  # a loaded step's server CPU after publishing stopped, at most this share
PUBLISHER_SHORT = 0.97  # publisher reached less than this share of the asked rate: invalid
OTHER_LIMIT = 0.20  # cores of CPU used by processes not ours: the step is noise, retried


class Publisher:
    """The publisher process (pinned to the load core), driven by JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self._process, self._log = process, log

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, argv: list[str], env: dict[str, str], log: Path) -> Publisher:
        with log.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                *pinned(argv, LOAD_CORE),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=REPO_ROOT,
                env={**os.environ, **env},
                start_new_session=True,
            )
        publisher = cls(process, log)
        await publisher._answer(patience=30)
        return publisher

    async def _answer(self, patience: float) -> dict[str, Any]:
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), patience)
        except TimeoutError:
            line = b""
        if not line:
            tail = self._log.read_text(errors="replace").splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"publisher failed: {tail[0]} (see {self._log.name})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def command(self, op: dict[str, Any], patience: float) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(op).encode() + b"\n")
        await self._process.stdin.drain()
        return await self._answer(patience)

    async def stop(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(Exception):
                await self.command({"op": "quit"}, patience=0.1)
            try:
                await asyncio.wait_for(self._process.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                await self._process.wait()


@dataclass
class Step:
    """One publish rate held for a while, and what came of it."""

    target: float  # deliveries/s asked for
    rate: float  # publishes/s asked for
    sent: int = 0
    expected: int = 0
    delivered: int = 0
    seconds: float = 0.0  # publish phase
    drain: float = 0.0  # waiting for the last frames after publishing stopped
    per_second: float = 0.0  # delivered / publish phase
    loss: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    samples: int = 0
    # The p99 of the same latencies taken when the generator read the frame, not when the kernel
    # received it: the difference is the load core's queue (see wsclient.StampedTransport).
    p99_read: float = 0.0
    # The p99 of the head of the fan-out (the first or the last connection, whichever
    # the server writes first): the publish path and one write (benchmarks/README.md).
    p99_head: float | None = None
    server_cpu: float = 0.0  # seconds, publish + drain, every server process
    drain_cpu: float = 0.0  # seconds of it after publishing stopped (a backlog shows here)
    server_util: float = 0.0  # server CPU / publish phase, in cores
    us_per_delivery: float = 0.0
    # The part of it spent in the kernel (system time: the sends, wake-ups, interrupts);
    # None in results recorded before it was measured.
    kernel_us_per_delivery: float | None = None
    generator_util: float = 0.0  # this process, share of its core
    load_core_busy: float = 0.0  # the whole load core (generator + publisher + Redis)
    server_core_busy: float = 0.0  # the whole server core, softirq included
    other: float = 0.0  # cores used by processes that are not part of the benchmark
    publisher_lag: float = 0.0
    dropped: int = 0  # subscriber connections closed by the server during the step
    backlog_drops: int = 0  # packets the kernel's receive backlogs dropped (procs.backlog_drops)
    waited: float = 0.0  # for the server to idle and the machine to calm down, before
    verdict: str = ""  # "clean", or why not
    noisy: bool = False  # other work ran meanwhile (a clean step still counts)
    loaded: bool = False  # the load core was past LOAD_SATURATED (a clean step still counts)
    valid: bool = True  # False: the load side, not the server, was the limit

    def judge(self) -> None:
        """Name what made the step not clean; "clean" when nothing did.

        Other work on the machine can only make a server look worse (it steals CPU), so
        a step that passes despite it counts, noted as noisy; one that fails is invalid.
        A load core past 90 % is the same, with one more way to mislead: a generator that
        falls behind lets the counting sockets' windows fill, and the server then sends
        its backlog after publishing stopped, joined into fewer writes, which lowers its
        measured use. A loaded step counts only when it kept up: the server's CPU after
        publishing stopped was small, and the probes read their frames within the p99
        limit. Otherwise, or when it failed, it is invalid.
        """
        reasons = []
        saturated = self.server_util > SERVER_SATURATED or self.server_core_busy > SERVER_CORE_FULL
        if self.sent < PUBLISHER_SHORT * self.rate * self.seconds:
            # Nchan's publisher posts to the server itself: when that is saturated, the
            # publisher falling behind is the server's limit, not the load side's.
            self.valid = saturated
            reasons.append("publisher behind")
        if self.loss > LOSS_LIMIT:
            reasons.append(f"loss {self.loss:.2%}")
        if self.p99 > P99_LIMIT:
            reasons.append(f"p99 {self.p99:.2f}s")
        if saturated:
            reasons.append("server core saturated")
        if self.dropped:
            reasons.append(f"{self.dropped} dropped")
        self.noisy = self.other > OTHER_LIMIT
        self.loaded = self.generator_util > LOAD_SATURATED or self.load_core_busy > LOAD_SATURATED
        kept_up = self.drain_cpu <= DRAIN_SHARE * self.server_cpu and self.p99_read <= P99_LIMIT
        if self.loaded and (reasons or not kept_up):
            self.valid = False
            reasons.insert(0, "load core saturated")
        if self.noisy and reasons:
            self.valid = False
            reasons.insert(0, f"machine busy ({self.other:.2f} cores of other work)")
        self.verdict = "; ".join(reasons) or "clean"

    @property
    def clean(self) -> bool:
        return self.verdict == "clean"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Servers:
    """The server process(es) of one scenario, pinned to the server core."""

    peer: Peer
    ctx: Context
    count: int = 1
    procs: list[Proc] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    async def start(self) -> None:
        for index in range(self.count):
            port = free_port()
            command = self.peer.server(self.ctx, port)
            log = self.ctx.run_dir / f"{self.peer.name}-server-{index}.log"
            proc = spawn(
                self.peer.name, command.argv, log, core=SERVER_CORE, env=command.env,
                cwd=REPO_ROOT,
            )  # fmt: skip
            self.procs.append(proc)
            self.ports.append(port)
        for proc, port in zip(self.procs, self.ports, strict=True):
            await wait_http_ok(port, "/readyz", proc)

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in descendants(proc.pid)]

    def cpu(self) -> float:
        return tree_cpu_seconds(self.pids())

    def cpu_split(self) -> tuple[float, float]:
        """(user, kernel) CPU seconds of every server process."""
        return tree_cpu_split(self.pids())

    def memory(self) -> tuple[int, int]:
        return tree_memory_kib(self.pids())

    def alive(self) -> bool:
        return all(proc.alive() for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


async def wait_machine_quiet(own_cpu: Callable[[], float], cap: float = 10.0) -> float:
    """Wait (at most ``cap`` s) until processes not ours use little CPU; return their use.

    ``own_cpu`` gives the CPU seconds of every benchmark process so far.
    """
    deadline = time.monotonic() + cap
    meter = CoreMeter()
    while True:
        meter.start()
        own0, start = own_cpu(), time.monotonic()
        await asyncio.sleep(0.5)
        other = meter.tasks() - (own_cpu() - own0) / (time.monotonic() - start)
        if other < OTHER_LIMIT / 2 or time.monotonic() > deadline:
            return other


async def wait_server_idle(servers: Servers, fleet: Fleet, cap: float = 30.0) -> None:
    """Wait (at most ``cap`` s) until the server has worked off any backlog of a past step.

    Without this a step after an overloaded one counts the old step's late frames.
    """
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        cpu0, count0 = servers.cpu(), fleet.delivered()
        await asyncio.sleep(0.5)
        if servers.cpu() - cpu0 < 0.03 and fleet.delivered() == count0:
            return


async def sync(fleet: Fleet, publisher: Publisher, patience: float = 20.0) -> int:
    """Publish to every tool until each live subscriber has had a frame; return laggards."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        await publisher.command({"op": "sync"}, patience=30)
        await fleet.wait_quiet(quiet=0.3, cap=2.0)
        if fleet.min_count() >= 1:
            break
    await fleet.wait_quiet(quiet=0.5, cap=5.0)
    return sum(1 for sub in fleet.subscribers if sub.count == 0)


async def measure_step(
    fleet: Fleet,
    publisher: Publisher,
    servers: Servers,
    *,
    target: float,
    duration: float,
    seed: int,
    load_pids: list[int],
) -> Step:
    """Publish at the rate that gives ``target`` deliveries/s and measure everything."""
    per_tool = fleet.subscribers_per_tool()
    fan = sum(per_tool.values()) / len(fleet.tools)  # subscribers reached per publish
    step = Step(target=target, rate=target / fan)
    base, dropped0 = fleet.delivered(), fleet.closed()
    fleet.take_latencies()
    probes = fleet.probe_counts()
    meter = CoreMeter()
    meter.start()
    fleet.coalesce(COALESCE_BYTES)
    (user0, kernel0), gen0, start = servers.cpu_split(), self_cpu_seconds(), time.monotonic()
    cpu0 = user0 + kernel0
    load0 = tree_cpu_seconds(load_pids)
    drops0 = backlog_drops()
    answer = await publisher.command(
        {"op": "publish", "rate": step.rate, "duration": duration, "seed": seed},
        patience=duration * 3 + 30,
    )
    await fleet.probes_caught_up(probes, answer["per_tool"], cap=1.0)
    publish_end = time.monotonic()
    cpu_publish, gen_publish = servers.cpu() - cpu0, self_cpu_seconds() - gen0
    busy, tasks = meter.busy(), meter.tasks()
    load_cpu = tree_cpu_seconds(load_pids) - load0
    fleet.coalesce(1)
    step.drain = await fleet.wait_quiet(quiet=1.0, cap=max(5.0, duration))
    user, kernel = servers.cpu_split()
    step.server_cpu = user + kernel - cpu0
    kernel_cpu = kernel - kernel0
    step.drain_cpu = step.server_cpu - cpu_publish

    step.sent, step.seconds = answer["sent"], answer["elapsed"]
    step.publisher_lag = answer["max_lag"]
    step.expected = sum(
        count * per_tool.get(tool, 0)
        for tool, count in zip(fleet.tools, answer["per_tool"], strict=True)
    )
    step.delivered = fleet.delivered() - base
    step.dropped = fleet.closed() - dropped0
    step.backlog_drops = backlog_drops() - drops0
    step.per_second = step.delivered / step.seconds
    step.loss = 1 - step.delivered / step.expected if step.expected else 0.0
    latencies, read, step.p99_head = fleet.take_latencies()
    step.samples = len(latencies)
    step.p50, step.p90, step.p99 = (percentile(latencies, q) for q in (0.5, 0.9, 0.99))
    step.max = max(latencies, default=0.0)
    step.p99_read = percentile(read, 0.99)
    phase = max(publish_end - start, 1e-6)
    step.server_util = cpu_publish / phase
    step.us_per_delivery = step.server_cpu / step.delivered * 1e6 if step.delivered else 0.0
    step.kernel_us_per_delivery = kernel_cpu / step.delivered * 1e6 if step.delivered else None
    step.generator_util = gen_publish / phase
    step.load_core_busy = busy.get(LOAD_CORE, 0.0)
    step.server_core_busy = busy.get(SERVER_CORE, 0.0)
    step.other = max(0.0, tasks - (cpu_publish + gen_publish + load_cpu) / phase)
    step.judge()
    return step
