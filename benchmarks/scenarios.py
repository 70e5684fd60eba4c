"""The scenarios, their sizes per mode, and how each one runs against one peer."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from benchmarks.fleet import ConnectStats, Endpoint, Fleet
from benchmarks.peers import Context, Peer
from benchmarks.procs import LOAD_CORE, CoreMeter, self_cpu_seconds, tree_cpu_seconds
from benchmarks.session import (
    LOAD_SATURATED,
    OTHER_LIMIT,
    Publisher,
    Servers,
    Step,
    measure_step,
    sync,
    wait_machine_quiet,
    wait_server_idle,
)


@dataclass(frozen=True)
class Ladder:
    """A stepped load: subscribers over tools, on ``processes`` servers, rates in deliveries/s."""

    subscribers: int
    tools: int
    steps: tuple[int, ...]
    reference: int  # the step whose CPU/delivery and latency the tables compare
    processes: int = 1
    probes: int = 5


@dataclass(frozen=True)
class Plan:
    """Everything a mode decides: sizes, rates, durations."""

    mode: str
    step_seconds: float
    connect_rate: float  # subscriptions/s while setting a scenario up
    ladders: dict[str, Ladder]
    idle_connections: int
    connect_burst: int  # connections opened as fast as the server takes them
    connect_timeout: float = 15.0
    # The reference step is measured this often and its figures are the medians: on a
    # VM one 6 s step can be 30 % off the next, enough to flip a comparison.
    reference_runs: int = 1
    # A held step (``--hold``) says when it starts and which processes serve it, so
    # that a profiler can be pointed at them.
    announce_steps: bool = False


NOISY_RETRIES = 3  # a step spoilt by other work on the machine is run again, this often

_FANOUT = (
    2_000, 5_000, 10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 135_000, 170_000, 200_000,
    250_000, 300_000,
)  # fmt: skip


PLANS = {
    "full": Plan(
        mode="full",
        step_seconds=6.0,
        connect_rate=1000.0,
        ladders={
            "fanout-1000": Ladder(1000, 1, _FANOUT, 20_000),
            "fanout-5000": Ladder(5000, 1, _FANOUT, 20_000),
            "many-channels": Ladder(
                5000, 500, (1_000, 2_000, 5_000, 10_000, 20_000, 40_000, 60_000), 10_000, probes=50
            ),
            "scale-out": Ladder(
                2000,
                1,
                (2_000, 5_000, 10_000, 20_000, 40_000, 80_000, 120_000, 160_000, 200_000, 250_000),
                20_000,
                2,
            ),
        },
        idle_connections=10_000,
        connect_burst=3000,
        reference_runs=3,
    ),
    "quick": Plan(
        mode="quick",
        step_seconds=3.0,
        connect_rate=2000.0,
        ladders={
            "fanout-1000": Ladder(
                1000, 1, (2_000, 5_000, 20_000, 60_000, 100_000, 135_000), 20_000
            ),
            "fanout-5000": Ladder(5000, 1, (2_000, 5_000, 20_000, 60_000, 100_000), 20_000),
            "many-channels": Ladder(5000, 500, (2_000, 10_000, 20_000, 40_000), 10_000, probes=50),
            "scale-out": Ladder(2000, 1, (5_000, 20_000, 60_000), 20_000, 2),
        },
        idle_connections=3000,
        connect_burst=1000,
    ),
    "smoke": Plan(
        mode="smoke",
        step_seconds=1.0,
        connect_rate=500.0,
        ladders={
            "fanout-1000": Ladder(20, 1, (200, 1000), 200, probes=2),
            "many-channels": Ladder(20, 5, (200,), 200, probes=5),
            "scale-out": Ladder(20, 1, (200,), 200, 2, probes=2),
        },
        idle_connections=50,
        connect_burst=50,
        connect_timeout=10.0,
    ),
}


def held(plan: Plan, rate: int, seconds: float) -> Plan:
    """``plan`` cut down to one step of each ladder, at ``rate`` deliveries/s for
    ``seconds``, measured once: a steady load to profile a server under."""
    ladders = {name: replace(ladder, steps=(rate,), reference=rate)
               for name, ladder in plan.ladders.items()}  # fmt: skip
    return replace(plan, step_seconds=seconds, ladders=ladders, reference_runs=1,
                   announce_steps=True)  # fmt: skip


SCENARIOS = ("fanout-1000", "fanout-5000", "many-channels", "idle-memory", "connect-rate",
             "scale-out")  # fmt: skip


def _tools(count: int) -> list[str]:
    return ["bench"] if count == 1 else [f"t{index}" for index in range(count)]


def _fleet(peer: Peer, servers: Servers, tools: list[str], size: int, probes: int) -> Fleet:
    endpoints = [Endpoint(port, peer.ws_path) for port in servers.ports]
    return Fleet(endpoints, tools, peer.dialect, acks=peer.acks, size=size, probes=probes)


def _connect_dict(stats: ConnectStats) -> dict[str, Any]:
    return {**asdict(stats), "rate": stats.rate}


async def run_ladder(peer: Peer, ctx: Context, plan: Plan, ladder: Ladder) -> dict[str, Any]:
    """Connect, sync, then step the rate up until a step is not clean."""
    tools = _tools(ladder.tools)
    servers = Servers(peer, ctx, ladder.processes)
    result: dict[str, Any] = {"ladder": asdict(ladder), "steps": []}
    publisher: Publisher | None = None
    fleet: Fleet | None = None
    try:
        await servers.start()
        command = peer.publisher(ctx, servers.ports, tools)
        log = ctx.run_dir / f"{peer.name}-publisher.log"
        publisher = await Publisher.start(command.argv, command.env, log)
        fleet = _fleet(peer, servers, tools, ladder.subscribers, ladder.probes)
        stats = await fleet.connect(plan.connect_rate, 256, plan.connect_timeout)
        result["connect"] = _connect_dict(stats)
        if stats.ready == 0:
            result["stopped"] = "no subscriber got ready: " + "; ".join(stats.reasons)
            return result
        result["unsynced"] = await sync(fleet, publisher)
        load_pids = [publisher.pid, ctx.redis_pid]

        def own_cpu() -> float:
            return servers.cpu() + self_cpu_seconds() + tree_cpu_seconds(load_pids)

        async def run_step(index: int) -> Step:
            if ladder.steps[index] != ladder.reference:
                return await run_once(index)
            runs = [await run_once(index) for _ in range(plan.reference_runs)]
            return _median_step(runs)

        async def run_once(index: int) -> Step:
            for _attempt in range(1 + NOISY_RETRIES):
                waited = time.monotonic()
                await wait_server_idle(servers, fleet)
                await wait_machine_quiet(own_cpu)
                waited = time.monotonic() - waited
                if plan.announce_steps:
                    pids = " ".join(str(pid) for pid in servers.pids())
                    print(f"  {peer.name}: {ladder.steps[index]:,} deliveries/s for "
                          f"{plan.step_seconds:g} s from now; server pids: {pids}",
                          flush=True)  # fmt: skip
                step = await measure_step(
                    fleet, publisher, servers, target=ladder.steps[index],
                    duration=plan.step_seconds, seed=index + 1, load_pids=load_pids,
                )  # fmt: skip
                step.waited = waited
                if step.valid or step.other <= OTHER_LIMIT:
                    break
                result["noisy_retries"] = result.get("noisy_retries", 0) + 1
            result["steps"].append(step.as_dict())
            return step

        result["stopped"] = await _climb(ladder, run_step, servers)
        result["close_reasons"] = fleet.close_reasons()
    finally:
        if fleet is not None:
            fleet.close()
        if publisher is not None:
            await publisher.stop()
        servers.stop()
    _summarise(result, ladder)
    return result


async def _climb(
    ladder: Ladder, run_step: Callable[[int], Awaitable[Step]], servers: Servers
) -> str:
    """Start at the reference rate; climb while clean, else descend to the first clean rung.

    Returns what ended the ladder.
    """
    first = ladder.steps.index(ladder.reference)
    step = await run_step(first)
    if step.clean:
        for index in range(first + 1, len(ladder.steps)):
            step = await run_step(index)
            if not servers.alive():
                return "server exited"
            if not step.clean:
                return step.verdict
        return "ladder top reached"
    limit = step.verdict
    index = first
    while step.valid and servers.alive() and index > 0:
        index = _next_lower(ladder, index, step)
        step = await run_step(index)
        if step.clean:
            return limit
    if index == first or not step.valid:
        return limit if index == first else f"{limit}; then {step.verdict}"
    return limit + "; no clean step"


def _next_lower(ladder: Ladder, index: int, step: Step) -> int:
    """The rung to try after a step that was not clean: the next one down, or lower still.

    When the server was saturated, its measured cost says what one core can carry
    (1e6 / µs per delivery); rungs above 80 % of that are skipped, as each would only
    build a backlog (and take its time to work off) before failing.
    """
    lower = index - 1
    if step.us_per_delivery > 0 and step.server_util > 0.9:
        capacity = 0.8e6 / step.us_per_delivery
        while lower > 0 and ladder.steps[lower] > capacity:
            lower -= 1
    return lower


def _median_step(runs: list[Step]) -> Step:
    """The run with the median CPU per delivery, its latencies the medians of all runs.

    Only valid runs count (the load side was not the limit); with none, the last run.
    """
    valid = [step for step in runs if step.valid] or runs[-1:]
    by_cost = sorted(valid, key=lambda step: step.us_per_delivery)
    middle = by_cost[(len(by_cost) - 1) // 2]
    if len(valid) == 1:
        return middle
    latencies = {
        name: statistics.median(getattr(step, name) for step in valid)
        for name in ("p50", "p90", "p99", "max", "p99_read")
    }
    heads = [step.p99_head for step in valid if step.p99_head is not None]
    return replace(
        middle,
        **latencies,
        p99_head=statistics.median(heads) if heads else None,
        kernel_us_per_delivery=_kernel_part(middle, valid),
    )


def _kernel_part(middle: Step, runs: list[Step]) -> float | None:
    """The kernel's part of ``middle``'s CPU per delivery, at the kernel's share of all
    ``runs`` together: Linux splits user from system time by where its clock ticks
    (250 a second here) land, and one 6 s step at a tenth of a core is ~150 ticks, too
    few to split one step reliably (livefeed's three reference steps of 2026-11-29 12:01
    read 71-94 % kernel)."""
    split = [step for step in runs if step.kernel_us_per_delivery is not None]
    total = sum(step.us_per_delivery for step in split)
    if not total:
        return middle.kernel_us_per_delivery
    kernel = sum(step.kernel_us_per_delivery or 0.0 for step in split)
    return middle.us_per_delivery * kernel / total


def _summarise(result: dict[str, Any], ladder: Ladder) -> None:
    steps = [Step(**raw) for raw in result["steps"]]
    clean = sorted((step for step in steps if step.clean), key=lambda step: step.target)
    result["best"] = clean[-1].as_dict() if clean else None
    runs = [step for step in steps if step.target == ladder.reference and step.valid]
    result["reference"] = _median_step(runs).as_dict() if runs else None
    if len(runs) > 1:
        result["reference_runs"] = [
            {"us_per_delivery": step.us_per_delivery, "p99": step.p99} for step in runs
        ]
    # The figure is only a lower bound when the load side, not the server, ended the ladder.
    last = steps[-1] if steps else None
    result["bounded_by_load"] = bool(last and not last.valid)
    result["top_reached"] = bool(clean and clean[-1].target == ladder.steps[-1])
    result["peak_load_core"] = max((step.load_core_busy for step in steps), default=0.0)


def resummarise(results: dict[str, Any]) -> None:
    """Derive every ladder's figures again from its recorded steps, by today's rules."""
    for peer in results.get("peers", {}).values():
        for result in peer.get("scenarios", {}).values():
            if result and result.get("steps") and "ladder" in result:
                _summarise(result, Ladder(**result["ladder"]))


async def run_idle_memory(peer: Peer, ctx: Context, plan: Plan) -> dict[str, Any]:
    """Memory per idle subscribed connection: server PSS before and after N subscriptions."""
    servers = Servers(peer, ctx)
    fleet: Fleet | None = None
    try:
        await servers.start()
        await asyncio.sleep(1.0)
        rss0, pss0 = servers.memory()
        fleet = _fleet(peer, servers, ["bench"], plan.idle_connections, 0)
        stats = await fleet.connect(plan.connect_rate, 256, plan.connect_timeout)
        await asyncio.sleep(2.0)  # let allocations settle
        rss1, pss1 = servers.memory()
        live = stats.ready - fleet.closed()
        return {
            "connect": _connect_dict(stats),
            "live": live,
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "pss_before_kib": pss0,
            "pss_after_kib": pss1,
            "kib_per_connection": (pss1 - pss0) / live if live else None,
            "rss_kib_per_connection": (rss1 - rss0) / live if live else None,
        }
    finally:
        if fleet is not None:
            fleet.close()
        servers.stop()


async def run_connect_rate(peer: Peer, ctx: Context, plan: Plan) -> dict[str, Any]:
    """Connect + subscribe as fast as the server takes it (256 in flight, no rate bound)."""
    servers = Servers(peer, ctx)
    fleet: Fleet | None = None
    try:
        await servers.start()
        fleet = _fleet(peer, servers, ["bench"], plan.connect_burst, 0)
        meter = CoreMeter()
        meter.start()
        cpu0, gen0, redis0 = servers.cpu(), self_cpu_seconds(), tree_cpu_seconds([ctx.redis_pid])
        stats = await fleet.connect(1e9, 256, plan.connect_timeout)
        cpu, gen = servers.cpu() - cpu0, self_cpu_seconds() - gen0
        ours = cpu + gen + tree_cpu_seconds([ctx.redis_pid]) - redis0
        busy, other = meter.busy(), max(0.0, meter.tasks() - ours / stats.seconds)
        return {
            "other": other,
            "connect": _connect_dict(stats),
            "server_cpu": cpu,
            "us_per_connect": cpu / stats.ready * 1e6 if stats.ready else None,
            "server_util": cpu / stats.seconds,
            "generator_util": gen / stats.seconds,
            "load_core_busy": busy.get(LOAD_CORE, 0.0),
            # The generator's handshakes are Python: past 90 % the rate is its, not the server's.
            "bounded_by_load": busy.get(LOAD_CORE, 0.0) > LOAD_SATURATED,
        }
    finally:
        if fleet is not None:
            fleet.close()
        servers.stop()


async def run_scenario(peer: Peer, ctx: Context, plan: Plan, name: str) -> dict[str, Any] | None:
    """Run one named scenario; None when the plan leaves it out (smoke mode)."""
    if name == "idle-memory":
        return await run_idle_memory(peer, ctx, plan)
    if name == "connect-rate":
        return await run_connect_rate(peer, ctx, plan)
    ladder = plan.ladders.get(name)
    return None if ladder is None else await run_ladder(peer, ctx, plan, ladder)
