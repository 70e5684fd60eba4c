"""Token buckets and the rate rules built on them. Pure: the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full.

    A cost above ``burst`` is taken from a full bucket and leaves it in debt (negative):
    it waits for a full bucket, not for tokens that can never be there (other takes in
    the meantime delay it), and what comes after it waits until the debt is paid. The
    average stays within ``rate``."""

    rate: float
    burst: float
    stamp: float = 0.0
    tokens: float = field(init=False)  # below 0 while in debt

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough (a full bucket is enough for any
        cost); False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens >= min(cost, self.burst):
            self.tokens -= cost
            return True
        return False

    def give_back(self, cost: float) -> None:
        """Return ``cost`` tokens taken for something that then did not happen."""
        self.tokens = min(self.burst, self.tokens + cost)

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until :meth:`take` of ``cost`` will succeed (0 if it would now)."""
        self._refill(now)
        return max(0.0, (min(cost, self.burst) - self.tokens) / self.rate)


FORGIVEN_PER_SECOND = 1.0  # dropped frames a flooding client is forgiven, per second


class FrameRateLimit:
    """The client frame rule: over the rate, a frame is dropped, and the first of each
    streak of drops is answered with ``rate_limited``. Dropped frames are forgiven at
    ``FORGIVEN_PER_SECOND``; once ``burst`` of them are unforgiven the connection is
    closed with 4029: at once for a burst of twice ``burst`` frames, after ~18 s for a
    client going on at 25 frames/s against 20 (8 s of them on its burst), within a
    second at 100/s. (Counting only an unbroken streak never closed a flood that let
    one frame through now and then.)
    """

    __slots__ = ("_bucket", "_patience", "streak")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._bucket = TokenBucket(rate, burst, stamp=now)
        self._patience = TokenBucket(FORGIVEN_PER_SECOND, burst, stamp=now)
        self.streak = 0  # frames dropped since the last accepted one

    def check(self, now: float) -> str:
        """``"ok"``, ``"reject"`` (first of a streak: answer it), ``"drop"``, or ``"close"``."""
        if self._bucket.take(now):
            self.streak = 0
            return "ok"
        self.streak += 1
        self._patience.take(now)
        if self._patience.tokens < 1:
            return "close"
        return "reject" if self.streak == 1 else "drop"
