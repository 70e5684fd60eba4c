"""Token buckets and the rate rules built on them. Pure: the clock is passed in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def give_back(self, cost: float) -> None:
        """Return ``cost`` tokens taken for something that then did not happen."""
        self.tokens = min(self.burst, self.tokens + cost)

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens will be there (0 if they are now)."""
        self._refill(now)
        return max(0.0, (cost - self.tokens) / self.rate)


class FrameRateLimit:
    """The client frame rule: over the rate, a frame is dropped with one
    ``rate_limited`` error per streak; a streak as long as the burst closes with 4029.
    """

    __slots__ = ("_bucket", "_close_after", "streak")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._bucket = TokenBucket(rate, burst, stamp=now)
        self._close_after = burst
        self.streak = 0  # frames dropped since the last accepted one

    def check(self, now: float) -> str:
        """``"ok"``, ``"reject"`` (first of a streak: answer it), ``"drop"``, or ``"close"``."""
        if self._bucket.take(now):
            self.streak = 0
            return "ok"
        self.streak += 1
        if self.streak >= self._close_after:
            return "close"
        return "reject" if self.streak == 1 else "drop"
