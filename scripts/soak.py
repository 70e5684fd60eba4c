"""Soak test: thousands of connections with churn and steady publishing, for minutes.

Not part of the test suite. It starts its own redis-server and livefeed processes
on free ports (Redis-backed, so two processes share the load), opens N WebSocket
clients spread over both, each subscribed to a few of T tools, and for the whole
run:

* publishes R events/s over HTTP to random tools, recording the acknowledged ids;
* churns: every second a share of the clients disconnect and reconnect (to either
  process) resuming every tool with ``since`` = the last id they saw;
* samples each server's RSS every few seconds.

At the end every client's received ids per tool are checked against the
acknowledged ids: nothing missing after its first event, nothing repeated, strictly
increasing. It prints a report (and writes it as JSON with --json).

    .venv/bin/python scripts/soak.py --connections 3000 --duration 300
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
PUBLISH_KEY = "soak-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def id_key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


@dataclass
class Client:
    """One subscriber identity; it survives reconnects and resumes with ``since``."""

    name: int
    tools: list[str]
    received: dict[str, list[str]] = field(default_factory=dict)
    reconnects: int = 0
    unexpected_closes: Counter[int | None] = field(default_factory=Counter)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tools = [f"soak-{i}" for i in range(args.tools)]
        self.acked: dict[str, list[str]] = {tool: [] for tool in self.tools}
        self.publish_errors: Counter[str] = Counter()
        self.connect_errors = 0
        self.memory: list[tuple[float, list[int]]] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="livefeed-soak-"))
        self.stop = asyncio.Event()

    # Processes -----------------------------------------------------------------

    def start_processes(self) -> None:
        redis_port = free_port()
        self.processes.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(redis_port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEFEED_")}
        env.update(
            LIVEFEED_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            LIVEFEED_PUBLISH_KEYS=PUBLISH_KEY,
            LIVEFEED_LOG_LEVEL="warning",
        )
        for index in range(self.args.servers):
            port = free_port()
            log = (self.workdir / f"server-{index}.log").open("wb")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "livefeed", "serve", "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            self.ports.append(port)
        deadline = time.monotonic() + 20
        for port in self.ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("servers did not start")
                time.sleep(0.1)

    def stop_processes(self) -> list[int | None]:
        codes = []
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=15))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(None)
        return codes

    def server_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("server-*.log"))

    # Load ----------------------------------------------------------------------

    async def run_client(self, client: Client) -> None:
        """Stay connected until the end, reconnecting (resuming) when churned."""
        while not self.stop.is_set():
            port = self.rng.choice(self.ports)
            since = {t: ids[-1] for t, ids in client.received.items() if ids}
            frame = {"type": "subscribe", "tools": client.tools, "since": since}
            try:
                async with connect(
                    f"ws://127.0.0.1:{port}/ws", max_size=None, open_timeout=30
                ) as ws:
                    await ws.send(orjson.dumps(frame).decode())
                    lifetime = self.rng.expovariate(1 / self.args.lifetime)
                    until = time.monotonic() + lifetime
                    while not self.stop.is_set() and time.monotonic() < until:
                        try:
                            message = await asyncio.wait_for(ws.recv(), 1.0)
                        except TimeoutError:
                            continue
                        data = orjson.loads(message)
                        if data["type"] == "event":
                            client.received.setdefault(data["tool"], []).append(data["id"])
                        elif data["type"] == "error":
                            client.unexpected_closes[-1] += 1
            except ConnectionClosed as closed:
                client.unexpected_closes[closed.rcvd.code if closed.rcvd else None] += 1
            except (OSError, TimeoutError):
                self.connect_errors += 1
                await asyncio.sleep(0.5)
            if not self.stop.is_set():
                client.reconnects += 1

    async def publish(self) -> None:
        interval = 1 / self.args.rate
        async with httpx.AsyncClient(timeout=10) as http:
            next_at = time.monotonic()
            while not self.stop.is_set():
                tool = self.rng.choice(self.tools)
                port = self.rng.choice(self.ports)
                document = {
                    "kind": "story",
                    "tools": [tool],
                    "data": {"author": {"handle": "soak"}, "title": "soak", "body": "x" * 200},
                }
                try:
                    response = await http.post(
                        f"http://127.0.0.1:{port}/api/events",
                        content=orjson.dumps(document),
                        headers={"Authorization": f"Bearer {PUBLISH_KEY}"},
                    )
                    if response.status_code == 202:
                        self.acked[tool].append(response.json()["events"][0]["id"])
                    else:
                        self.publish_errors[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    self.publish_errors[type(exc).__name__] += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sample_memory(self) -> None:
        started = time.monotonic()
        servers = self.processes[1:]
        while not self.stop.is_set():
            self.memory.append((time.monotonic() - started, [rss_kib(p.pid) for p in servers]))
            await asyncio.sleep(self.args.sample_every)

    async def run(self) -> dict[str, object]:
        clients = [
            Client(i, self.rng.sample(self.tools, self.rng.randint(1, 3)))
            for i in range(self.args.connections)
        ]
        started = time.monotonic()
        sampler = asyncio.create_task(self.sample_memory())
        tasks = []
        for client in clients:  # open at a bounded rate
            tasks.append(asyncio.create_task(self.run_client(client)))
            await asyncio.sleep(1 / self.args.connect_rate)
        publisher = asyncio.create_task(self.publish())
        await asyncio.sleep(max(0.0, self.args.duration - (time.monotonic() - started)))
        self.stop.set()
        await publisher
        # Let in-flight events land before checking, then close everything.
        await asyncio.sleep(3)
        await asyncio.gather(*tasks)
        await sampler
        return self.report(clients, time.monotonic() - started)

    def report(self, clients: list[Client], elapsed: float) -> dict[str, object]:
        missing = repeated = disorder = checked = 0
        for client in clients:
            for tool, got in client.received.items():
                if not got:
                    continue
                acked = sorted(self.acked[tool], key=id_key)
                if got[0] not in acked:
                    continue  # its first event came from an unacknowledged publish
                start = acked.index(got[0])
                expected = [i for i in acked[start:] if id_key(i) <= id_key(got[-1])]
                checked += len(expected)
                missing += len(set(expected) - set(got))
                repeated += len(got) - len(set(got))
                disorder += sum(1 for a, b in itertools.pairwise(got) if id_key(a) >= id_key(b))
        closes: Counter[str] = Counter()
        for client in clients:
            for code, count in client.unexpected_closes.items():
                closes[str(code)] += count
        log = self.server_logs()
        return {
            "connections": self.args.connections,
            "servers": self.args.servers,
            "tools": self.args.tools,
            "duration_s": round(elapsed, 1),
            "publish_rate": self.args.rate,
            "published_acked": sum(len(v) for v in self.acked.values()),
            "publish_errors": dict(self.publish_errors),
            "reconnects": sum(c.reconnects for c in clients),
            "connect_errors": self.connect_errors,
            "closes_or_errors_seen_by_clients": dict(closes),
            "deliveries_checked": checked,
            "missing": missing,
            "repeated": repeated,
            "out_of_order": disorder,
            "server_tracebacks": log.count("Traceback"),
            "server_error_lines": _error_lines(log),
            "rss_kib_over_time": [(round(t), kib) for t, kib in self.memory],
        }


def _error_lines(log: str, limit: int = 40) -> list[str]:
    """The log's error and warning lines and tracebacks, so that a report says what
    went wrong (the logs themselves go with the work directory)."""
    wanted = ("ERROR", "WARNING", "Traceback", "Error", "  File ")
    return [line for line in log.splitlines() if any(w in line for w in wanted)][:limit]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--tools", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50, help="publishes per second")
    parser.add_argument("--duration", type=float, default=300, help="seconds")
    parser.add_argument(
        "--lifetime", type=float, default=60, help="mean seconds a connection lives before churning"
    )
    parser.add_argument("--connect-rate", type=float, default=500, help="opens per second")
    parser.add_argument("--sample-every", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    soak = Soak(args)
    soak.start_processes()
    try:
        report = asyncio.run(soak.run())
    finally:
        exit_codes = soak.stop_processes()
        shutil.rmtree(soak.workdir, ignore_errors=True)
    report["server_exit_codes"] = exit_codes
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    clean = report["missing"] == report["repeated"] == report["out_of_order"] == 0
    return 0 if clean and report["server_tracebacks"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
