"""The servers under test: livefeed and its peers, each behind a small adapter.

An adapter says how to start one server process (on a given port, with the suite's
Redis), which WebSocket path subscribes to a tool, which dialect the generator speaks,
and how to publish through that server's own Redis path. Only the standard library is
imported here; each server's packages live in its own process.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.wsclient import Dialect

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "peers" / "node"


@dataclass(frozen=True)
class Context:
    """What every adapter needs from the run."""

    redis_url: str
    run_dir: Path
    redis_pid: int = 0  # its CPU is the load side's, not the server's


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def bench_python() -> str:
    """The suite's venv interpreter (benchmarks/.venv), where the peers are installed."""
    venv = BENCH_DIR / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@functools.cache
def _imports(python: str, module: str) -> bool:
    result = subprocess.run(
        [python, "-c", f"import {module}"], cwd=REPO_ROOT, capture_output=True, check=False
    )
    return result.returncode == 0


@functools.cache
def livefeed_python() -> str | None:
    """$LIVEFEED_PYTHON, else the repo's .venv, else the suite's venv: the first with livefeed."""
    candidates = [
        os.environ.get("LIVEFEED_PYTHON", ""),
        str(REPO_ROOT / ".venv" / "bin" / "python"),
        bench_python(),
    ]
    for python in candidates:
        if python and Path(python).exists() and _imports(python, "livefeed.app"):
            return python
    return None


@functools.cache
def python_versions(python: str, packages: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for name in {list(packages)!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def publisher_command(
    backend: str,
    url: str,
    tools: list[str],
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> Command:
    """``python -m benchmarks.publisher`` with one of its backends, publishing to ``url``."""
    argv = [python or bench_python(), "-m", "benchmarks.publisher", "--backend", backend]
    return Command([*argv, "--url", url, "--tools", ",".join(tools)], dict(env or {}))


class Peer:
    """Base adapter. Subclasses set the class attributes and the two commands."""

    name = ""  # command-line id
    label = ""  # table row
    dialect = Dialect.PLAIN
    acks = True  # the server sends a frame saying "subscribed" once a subscription is live
    packages: tuple[str, ...] = ()  # reported in RESULTS.md

    def ws_path(self, tool: str) -> str:
        return f"/ws?tools={tool}"

    def missing(self) -> str | None:
        """Why this peer cannot run here (None when it can)."""
        return None

    def server(self, ctx: Context, port: int) -> Command:
        raise NotImplementedError

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return python_versions(bench_python(), self.packages)


class PythonPeer(Peer):
    """A peer app module in benchmarks/peers, run by the suite's venv under uvicorn."""

    module = ""
    backend = "redis"  # benchmarks/publisher.py backend
    env: dict[str, str] = {}

    def missing(self) -> str | None:
        top = self.packages[0].replace("-", "_").replace("python_", "")
        if not _imports(bench_python(), top):
            return f"{self.packages[0]} is not installed (run benchmarks/setup)"
        return None

    def server(self, ctx: Context, port: int) -> Command:
        argv = [bench_python(), "-m", self.module, "--port", str(port)]
        return Command([*argv, "--redis-url", ctx.redis_url], dict(self.env))

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        return publisher_command(self.backend, ctx.redis_url, tools, env=self.env)


class Livefeed(Peer):
    name, label = "livefeed", "livefeed"
    packages = ("livefeed", "starlette", "uvicorn", "websockets", "redis", "uvloop")

    def missing(self) -> str | None:
        if livefeed_python() is None:
            return "livefeed is not importable yet (no interpreter can import livefeed.app)"
        return None

    def server(self, ctx: Context, port: int) -> Command:
        python = livefeed_python() or sys.executable
        argv = [python, "-m", "livefeed", "serve", "--host", "127.0.0.1", "--port", str(port)]
        # Logs at warning, as every peer runs (uvicorn logs each connection at info).
        argv += ["--redis-url", ctx.redis_url, "--log-level", "warning"]
        return Command(argv, {"LIVEFEED_PUBLISH_KEYS": "bench"})

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        python = livefeed_python() or sys.executable
        return publisher_command("livefeed", ctx.redis_url, tools, python)

    def versions(self) -> dict[str, str]:
        python = livefeed_python()
        return python_versions(python, self.packages) if python else {}


class Nchan(Peer):
    name, label = "nchan", "Nchan (nginx)"
    acks = False  # Nchan sends nothing on subscribe: ready at the 101, then the sync barrier

    def ws_path(self, tool: str) -> str:
        return f"/sub/{tool}"

    def missing(self) -> str | None:
        from benchmarks.peers.nchan import MODULE

        if shutil.which("nginx") is None or not MODULE.exists():
            return "nginx + libnginx-mod-nchan are not installed (run benchmarks/setup)"
        return None

    def server(self, ctx: Context, port: int) -> Command:
        from benchmarks.peers.nchan import write_config

        prefix = ctx.run_dir / f"nginx-{port}"
        config = write_config(prefix, port, ctx.redis_url)
        return Command(["nginx", "-p", str(prefix), "-c", str(config), "-e", "stderr"])

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        return publisher_command("nchan", f"http://127.0.0.1:{ports[0]}", tools)

    def versions(self) -> dict[str, str]:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", "nginx", "libnginx-mod-nchan"],
            capture_output=True,
            text=True,
            check=False,
        )
        return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


class SocketIONode(Peer):
    name, label = "socketio-node", "Socket.IO (Node)"
    dialect = Dialect.SOCKETIO
    node_packages = ("socket.io", "@socket.io/redis-adapter", "@socket.io/redis-emitter", "redis")

    def ws_path(self, tool: str) -> str:
        return "/socket.io/?EIO=4&transport=websocket"

    def missing(self) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "socket.io").exists():
            return "npm packages missing (run benchmarks/setup)"
        return None

    def server(self, ctx: Context, port: int) -> Command:
        argv = ["node", str(NODE_DIR / "server.js"), "--port", str(port)]
        return Command([*argv, "--redis-url", ctx.redis_url])

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        argv = ["node", str(NODE_DIR / "publish.js"), "--url", ctx.redis_url]
        return Command([*argv, "--tools", ",".join(tools)])

    def versions(self) -> dict[str, str]:
        found = {
            "node": subprocess.run(
                ["node", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
        }
        for package in self.node_packages:
            manifest = NODE_DIR / "node_modules" / package / "package.json"
            if manifest.exists():
                found[package] = json.loads(manifest.read_text())["version"]
        return found


class WsBroadcast(PythonPeer):
    name, label = "ws-broadcast", "websockets broadcast() (baseline)"
    module = "benchmarks.peers.ws_broadcast"
    packages = ("websockets", "redis", "uvloop")


class NaiveStarlette(PythonPeer):
    name, label = "naive-starlette", "naive Starlette loop (baseline)"
    module = "benchmarks.peers.naive_starlette"
    packages = ("starlette", "uvicorn", "websockets", "redis", "uvloop")


class Floor(Peer):
    """The least work a server must do: a C epoll server that only sends (see its source)."""

    name, label = "floor", "C floor: sends only (baseline)"

    def missing(self) -> str | None:
        from benchmarks.peers.floor import BINARY, SOURCE

        if not BINARY.exists() or BINARY.stat().st_mtime < SOURCE.stat().st_mtime:
            return "the floor server is not built (run benchmarks/setup; it needs gcc)"
        return None

    def server(self, ctx: Context, port: int) -> Command:
        from urllib.parse import urlsplit

        from benchmarks.peers.floor import BINARY

        redis = urlsplit(ctx.redis_url)  # the suite's own: redis://127.0.0.1:<port>/0
        return Command([str(BINARY), str(port), str(redis.hostname), str(redis.port)])

    def publisher(self, ctx: Context, ports: list[int], tools: list[str]) -> Command:
        return publisher_command("redis", ctx.redis_url, tools)

    def versions(self) -> dict[str, str]:
        result = subprocess.run(
            ["gcc", "-dumpfullversion"], capture_output=True, text=True, check=False
        )
        return {"gcc": result.stdout.strip()} if result.returncode == 0 else {}


class PythonSocketIO(PythonPeer):
    name, label = "python-socketio", "python-socketio"
    dialect = Dialect.SOCKETIO
    module = "benchmarks.peers.psocketio_app"
    backend = "socketio"
    packages = ("python-socketio", "python-engineio", "uvicorn", "websockets", "redis")

    def ws_path(self, tool: str) -> str:
        return "/socket.io/?EIO=4&transport=websocket"


class Channels(PythonPeer):
    name, label = "channels", "Django Channels (pubsub layer)"
    module = "benchmarks.peers.channels_app"
    backend = "channels"
    packages = ("channels", "channels-redis", "django", "uvicorn", "websockets", "redis")


class ChannelsCore(Channels):
    name, label = "channels-core", "Django Channels (core layer)"
    env = {"BENCH_CHANNELS_LAYER": "core"}


class Broadcaster(PythonPeer):
    name, label = "broadcaster", "encode/broadcaster"
    module = "benchmarks.peers.broadcaster_app"
    packages = ("broadcaster", "starlette", "uvicorn", "websockets", "redis")


ALL: list[Peer] = [
    Livefeed(),
    Nchan(),
    SocketIONode(),
    WsBroadcast(),
    NaiveStarlette(),
    Floor(),
    PythonSocketIO(),
    Channels(),
    ChannelsCore(),
    Broadcaster(),
]
BY_NAME = {peer.name: peer for peer in ALL}
