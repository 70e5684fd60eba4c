"""One time unit for every wait in the suite, scaled by LIVEFEED_TEST_TIMEOUT_SCALE on slow
machines. Waits poll a condition; none sleeps a fixed time and hopes."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

SCALE = float(os.environ.get("LIVEFEED_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT = 10.0 * SCALE  # the default deadline for anything that should happen "soon"


def wait_until(condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what or condition}")
        time.sleep(0.02)


async def async_wait_until(
    condition: Callable[[], Awaitable[object] | object], timeout: float = TIMEOUT, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what or condition}")
        await asyncio.sleep(0.02)
