"""Exponential backoff with full jitter, for every reconnect loop.

Full jitter (a uniform draw between 0 and the exponential cap) spreads the
reconnects of many processes after a shared outage instead of synchronising them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.1
    cap: float = 5.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call widens the window, up to ``cap``."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        """After a connection proved stable: start again from ``base``."""
        self.attempt = 0
