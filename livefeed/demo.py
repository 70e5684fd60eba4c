"""Pace the demo stream (:mod:`livefeed.demo_data`) into any publish function.

Used by ``livefeed serve --demo`` (straight into the server's broker) and by
``livefeed demo`` (over HTTP or straight into Redis).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from livefeed.demo_data import demo_requests
from livefeed.errors import LivefeedError, Unauthorized

log = logging.getLogger("livefeed.demo")

PublishOne = Callable[[dict[str, Any]], Awaitable[object]]


async def run_demo(
    publish: PublishOne,
    rate: float,
    count: int | None = None,
    duration: float | None = None,
    seed: int | None = None,
) -> int:
    """Publish demo requests at about ``rate`` per second, jittered like real traffic,
    until ``count`` were published or ``duration`` seconds passed (both optional).
    Returns how many were published. A refused publish is logged and skipped, except
    one refused for its publish key (``Unauthorized``), which no later one would pass:
    that is raised."""
    rng = random.Random(seed)
    deadline = None if duration is None else time.monotonic() + duration
    published = 0
    for request in demo_requests(rng):
        if count is not None and published >= count:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            await publish(request)
            published += 1
        except Unauthorized:
            raise
        except LivefeedError as exc:
            log.warning("demo publish refused: %s", exc)
        await asyncio.sleep(rng.expovariate(rate))
    return published
