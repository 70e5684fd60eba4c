from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.server import ServerProcess


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests isolate themselves by key prefix."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone uses, so it may stop and restart it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def prefix() -> str:
    return f"lf-test-{uuid.uuid4().hex[:10]}:"


StartServer = Callable[..., ServerProcess]


def redis_env(redis: RedisServer, prefix: str) -> dict[str, str]:
    return {"LIVEFEED_REDIS_URL": redis.url, "LIVEFEED_REDIS_PREFIX": prefix}


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start ``livefeed serve`` processes; each is stopped when the test ends."""
    started: list[ServerProcess] = []

    def start(
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        ready_path: str = "/healthz",
        command: tuple[str, ...] = (),
        open_files: tuple[int, int] | None = None,
    ) -> ServerProcess:
        server = ServerProcess(env or {}, args, command, open_files)
        started.append(server)
        return server.start(ready_path)

    yield start
    # Stop every server before failing on one: a traceback in the first server's log
    # must not leave the others running.
    failures = []
    for server in started:
        try:
            server.stop()
        except AssertionError as failure:
            failures.append(failure)
    if failures:
        raise failures[0]


@pytest.fixture
async def redis_relay(own_redis: RedisServer) -> AsyncIterator[Relay]:
    """A relay in front of ``own_redis`` that can lose a command's reply, or hold the
    command back (tests/support/relay.py)."""
    relay = await Relay.open(own_redis.port)
    yield relay
    await relay.close()
