from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import redis_env
from tests.support.redis_server import RedisServer
from tests.support.server import ServerProcess


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[ServerProcess]:
    """A server with default settings shared by a module's tests, once per broker.
    Tests isolate themselves with unique tool names."""
    env = {}
    if request.param == "redis":
        env = redis_env(redis_server, f"lf-mod-{uuid.uuid4().hex[:8]}:")
    process = ServerProcess(env).start()
    yield process
    process.stop()
