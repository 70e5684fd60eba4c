"""``python -m benchmarks``: run the scenarios against livefeed and its peers, write RESULTS.md.

The full run records into benchmarks/results.json and benchmarks/RESULTS.md (rows of
peers not re-run are kept, each with its own date); ``--quick`` and ``--smoke`` write
under benchmarks/.runs/ unless ``--record`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import loop, report
from benchmarks.peers import ALL, BENCH_DIR, BY_NAME, Context, Peer
from benchmarks.procs import (
    LOAD_CORE,
    SERVER_CORE,
    arrival_stamp_point,
    core_cleared,
    cores_awake,
    loopback_acks_prompt,
    loopback_receive_on,
    one_run_at_a_time,
    pin_self,
    raise_fd_limit,
)
from benchmarks.redis_server import RedisServer
from benchmarks.scenarios import PLANS, SCENARIOS, Plan, held, resummarise, run_scenario

DEFAULT_PEERS = [peer.name for peer in ALL if peer.name != "channels-core"]
BUDGET_MINUTES = {"full": 50.0, "quick": 12.0, "smoke": 3.0}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes, smaller ladders")
    mode.add_argument("--smoke", action="store_true", help="seconds, tiny N: keeps it working")
    parser.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                        help=f"comma-separated, from: {', '.join(BY_NAME)}")  # fmt: skip
    parser.add_argument("--scenarios", help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--record", action="store_true",
                        help="write benchmarks/RESULTS.md even in --quick/--smoke")  # fmt: skip
    parser.add_argument("--loopback-receive", choices=("steered", "default"), default="steered",
                        help="where the clients' loopback TCP receive runs: the load core "
                        "(RPS on lo, needs root; restored after) or the kernel's default, "
                        "inside the server's sends")  # fmt: skip
    parser.add_argument("--client-acks", choices=("prompt", "delayed"), default="prompt",
                        help="how the counting connections acknowledge: at once, as a "
                        "browser reading each frame does (quickack on the 127.0.0.1 route, "
                        "needs root; restored after), or on the kernel's delayed-ACK timer, "
                        "as a client that does not read does")  # fmt: skip
    parser.add_argument("--idle-cores", choices=("poll", "default"), default="poll",
                        help="keep idle cores polling, not halted, for the run (holds "
                        "/dev/cpu_dma_latency at 0, needs root; lifted when the run ends), "
                        "or leave the kernel's idle states alone")  # fmt: skip
    parser.add_argument("--server-core", choices=("cleared", "shared"), default="cleared",
                        help="move the machine's other threads (services, kernel threads "
                        "that may move) off the servers' core for the run, needs root; "
                        "given back after; or leave them free to run there")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="re-render RESULTS.md from results.json")  # fmt: skip
    parser.add_argument("--hold", type=_held_step, metavar="RATE:SECONDS",
                        help="run one step of each ladder scenario at RATE deliveries/s "
                        "for SECONDS, announcing it with the server's pids, to profile a "
                        "server under a steady load; never recorded")  # fmt: skip
    args = parser.parse_args(argv)
    if args.hold and args.record:
        parser.error("a held step is for profiling and is never recorded: drop --record")
    return args


def _held_step(text: str) -> tuple[int, float]:
    """``RATE:SECONDS`` of ``--hold``, both positive."""
    rate, _, seconds = text.partition(":")
    try:
        held_step = int(rate), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected RATE:SECONDS, e.g. 20000:30, not {text!r}"
        ) from None
    if held_step[0] <= 0 or not 0 < held_step[1] < 3600:
        raise argparse.ArgumentTypeError("RATE must be above 0 and SECONDS within (0, 3600)")
    return held_step


def machine() -> dict[str, Any]:
    models = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": f"{len(models)} x {models[0] if models else platform.processor()}",
        "memory_gib": round(int(memory) / 2**20, 1),
        "kernel": platform.release(),
        # Every peer's sends pay for the machine's choice (benchmarks/README.md).
        "congestion_control": Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "generator_loop": loop.name(),
        "pinning": f"server: taskset -c {SERVER_CORE}; generator, publisher, Redis: "
        f"taskset -c {LOAD_CORE}",
    }


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


async def run_peer(
    peer: Peer,
    ctx: Context,
    plan: Plan,
    scenarios: list[str],
    redis: RedisServer,
    settings: dict[str, str],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": peer.label,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode,
        **settings,
        "versions": peer.versions(),
        "scenarios": {},
    }
    for name in scenarios:
        redis.flush()
        started = time.monotonic()
        try:
            result = await run_scenario(peer, ctx, plan, name)
        except Exception as exc:  # recorded in the table, the run goes on
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        if result is None:
            continue
        result["seconds"] = round(time.monotonic() - started, 1)
        result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        entry["scenarios"][name] = result
        print(f"  {name:14} {report.one_line(name, result)}", flush=True)
    return entry


def _load(path: Path) -> dict[str, Any]:
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {"meta": {}, "peers": {}}


def _save(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def _smoke_failures(results: dict[str, Any], names: list[str]) -> list[str]:
    failures = []
    for name in names:
        for scenario, result in results["peers"].get(name, {}).get("scenarios", {}).items():
            if "error" in result:
                failures.append(f"{name} {scenario}: {result['error']}")
            elif result.get("steps") and result["steps"][0]["verdict"] != "clean":
                failures.append(f"{name} {scenario}: {result['steps'][0]['verdict']}")
            elif "steps" in result and not result["steps"]:
                failures.append(f"{name} {scenario}: {result.get('stopped', 'no step')}")
    return failures


async def main_async(args: argparse.Namespace, settings: dict[str, str]) -> int:
    """The run; ``settings`` says how the machine was set for it (recorded with results)."""
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run_dir = BENCH_DIR / ".runs" / f"{stamp}-{plan.mode}{'-hold' if args.hold else ''}"
    out_dir = BENCH_DIR if (plan.mode == "full" or args.record) and not args.hold else run_dir
    results_path = out_dir / "results.json"
    if args.report_only:
        results = _load(BENCH_DIR / "results.json")
        resummarise(results)
        _save(BENCH_DIR / "results.json", results)
        (BENCH_DIR / "RESULTS.md").write_text(report.render(results))
        return 0

    names = [name for name in args.peers.split(",") if name]
    scenarios = [name for name in (args.scenarios or ",".join(SCENARIOS)).split(",") if name]
    unknown = [n for n in names if n not in BY_NAME] + [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown peer or scenario: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.hold:
        if args.scenarios is None:
            scenarios = [name for name in scenarios if name in plan.ladders]
        stepless = [name for name in scenarios if name not in plan.ladders]
        if stepless:
            print(f"--hold holds a ladder's step; this plan has none for: {', '.join(stepless)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        plan = held(plan, *args.hold)
    pin_self(LOAD_CORE)
    fds = raise_fd_limit()
    run_dir.mkdir(parents=True, exist_ok=True)
    results = _load(results_path)
    redis = RedisServer(run_dir)
    redis.start()
    results["meta"] = {
        **settings,
        "arrival_stamp": arrival_stamp_point(),
        **machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": plan.mode,
        "redis": redis.version(),
        "fd_limit": fds,
        "plan": report.plan_dict(plan),
    }
    print(f"benchmarks ({plan.mode}): logs in {run_dir}", flush=True)
    deadline = time.monotonic() + BUDGET_MINUTES[plan.mode] * 60
    ctx = Context(redis_url=redis.url, run_dir=run_dir, redis_pid=redis.pid)
    try:
        for name in names:
            peer = BY_NAME[name]
            reason = peer.missing()
            if reason is None and time.monotonic() > deadline:
                reason = "skipped: the run's time budget was spent"
            if reason is not None:
                print(f"{name}: not run ({reason})", flush=True)
                previous = results["peers"].get(name)
                if previous is None or not previous.get("scenarios"):
                    results["peers"][name] = {"label": peer.label, "missing": reason}
                continue
            print(f"{name}:", flush=True)
            entry = await run_peer(peer, ctx, plan, scenarios, redis, settings)
            previous = results["peers"].get(name, {})
            same_settings = all(previous.get(key) == value for key, value in settings.items())
            if previous.get("mode") == plan.mode and same_settings:
                # A re-run of some scenarios keeps this peer's other, earlier ones, when
                # they were measured the same way (the entry's settings label them all).
                kept = previous.get("scenarios", {})
                for result in kept.values():
                    result.setdefault("date", previous.get("date"))
                entry["scenarios"] = {**kept, **entry["scenarios"]}
            results["peers"][name] = entry
            out_dir.mkdir(parents=True, exist_ok=True)
            _save(results_path, results)
    finally:
        redis.stop()
    _save(results_path, results)
    (out_dir / "RESULTS.md").write_text(report.render(results))
    print(f"wrote {out_dir / 'RESULTS.md'}", flush=True)
    if plan.mode == "smoke":
        failures = _smoke_failures(results, names)
        for failure in failures:
            print(f"SMOKE FAILURE: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    # SIGTERM takes the Ctrl-C path, so every `finally` stops the processes we started.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = _parse(argv)
    # The smoke run (also a test) leaves the machine's settings alone.
    touch = not (args.smoke or args.report_only)
    steer = touch and args.loopback_receive == "steered"
    with (
        one_run_at_a_time(touch),
        loopback_receive_on(LOAD_CORE if steer else None) as receive,
        loopback_acks_prompt(touch and args.client_acks == "prompt") as acks,
        cores_awake(touch and args.idle_cores == "poll") as idle,
        core_cleared(SERVER_CORE if touch and args.server_core == "cleared" else None) as core,
    ):
        settings = {
            "loopback_receive": receive,
            "client_acks": acks,
            "idle_cores": idle,
            "server_core": core,
        }
        return loop.run(main_async(args, settings))
