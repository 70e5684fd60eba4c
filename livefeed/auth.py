"""Publish keys and publish rate limits. Pure: the clock is passed in."""

from __future__ import annotations

import hmac

from livefeed.errors import RateLimited, Unauthorized
from livefeed.limits import TokenBucket


class PublishKeys:
    """The accepted keys (several at once, so they can be rotated) and a token bucket
    per key. Keys are compared in constant time."""

    def __init__(self, keys: tuple[str, ...], rate: float, burst: int) -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._rate = rate
        self._burst = burst
        self._buckets: dict[bytes, TokenBucket] = {}

    def check(self, authorization: str | None) -> bytes:
        """The key a ``Bearer`` header carries, if it is one of ours; else Unauthorized."""
        if not self._keys:
            raise Unauthorized("HTTP publishing is off: the server has no LIVEFEED_PUBLISH_KEYS")
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("send the publish key as: Authorization: Bearer <key>")
        candidate = presented.strip().encode()
        match = None
        for key in self._keys:  # no early exit: the time taken does not depend on which key
            if hmac.compare_digest(candidate, key):
                match = key
        if match is None:
            raise Unauthorized("unknown publish key")
        return match

    def charge(self, key: bytes, events: int, now: float) -> None:
        """Spend ``events`` from the key's bucket, or raise RateLimited with a wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, stamp=now)
        if not bucket.take(now, events):
            wait = bucket.wait_time(now, events)
            raise RateLimited(
                f"over the publish rate of {self._rate:g} events/s for this key", retry_after=wait
            )
