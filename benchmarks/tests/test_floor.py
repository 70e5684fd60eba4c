"""The C floor peer does what the suite counts on: /readyz, the upgrade, the
``subscribed`` frame once Redis has the subscription, and each message of a tool, whole,
to that tool's subscribers only. Built with gcc, run against a real redis-server."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as redis
import websockets

from benchmarks.peers.floor import SOURCE
from benchmarks.procs import free_port
from benchmarks.redis_server import RedisServer

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("floor-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("floor") / "floor_server"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(built), str(SOURCE)], check=True)
    return built


@pytest.fixture
def floor(binary: Path, redis_server: RedisServer) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([str(binary), str(port), "127.0.0.1", str(redis_server.port)])
    try:
        _wait_ready(port, proc)
        yield port
        assert proc.poll() is None, "the floor server died"
    finally:
        proc.kill()
        proc.wait()


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert proc.poll() is None, "the floor server exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                assert reply.read() == b"ok\n"
                return
        except OSError:
            assert time.monotonic() < deadline, "the floor server never answered /readyz"
            time.sleep(0.05)


async def test_each_message_reaches_every_subscriber_of_its_tool_whole(
    floor: int, redis_server: RedisServer
) -> None:
    publisher = redis.Redis.from_url(redis_server.url)
    url = f"ws://127.0.0.1:{floor}/ws?tools="
    async with (
        websockets.connect(url + "flask") as first,
        websockets.connect(url + "flask") as second,
        websockets.connect(url + "django") as other,
        asyncio.timeout(TIMEOUT),
    ):
        for ws, tool in ((first, "flask"), (second, "flask"), (other, "django")):
            assert await ws.recv() == f'{{"type": "subscribed", "tool": "{tool}"}}'
        small, large = "s" * 300, "L" * 70_000  # 16- and 64-bit frame lengths
        await publisher.publish("flask", small)
        await publisher.publish("flask", large)
        await publisher.publish("django", "d")
        for ws in (first, second):
            assert [await ws.recv(), await ws.recv()] == [small, large]
        assert await other.recv() == "d"
    await publisher.aclose()


async def test_a_closed_subscriber_leaves_the_others_served(
    floor: int, redis_server: RedisServer
) -> None:
    publisher = redis.Redis.from_url(redis_server.url)
    url = f"ws://127.0.0.1:{floor}/ws?tools=kubernetes"
    async with websockets.connect(url) as staying, asyncio.timeout(TIMEOUT):
        async with websockets.connect(url) as leaving:
            await leaving.recv()
        await staying.recv()
        await publisher.publish("kubernetes", "after")
        assert await staying.recv() == "after"
    await publisher.aclose()
