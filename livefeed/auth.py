"""Publish keys and their rate limits; private tools and who may read them. Pure."""

from __future__ import annotations

import hmac

from livefeed.errors import RateLimited, Unauthorized
from livefeed.limits import TokenBucket
from livefeed.tokens import Claims, TokenError, verify
from livefeed.types import FIREHOSE


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
        """Spend ``events`` from the key's bucket, or raise RateLimited with a wait. A
        request costing more than the burst (a batch the contract allows: 1000 events,
        each once per tool it names) waits for a full bucket and overdraws it."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, stamp=now)
        if not bucket.take(now, events):
            wait = bucket.wait_time(now, events)
            raise RateLimited(
                f"over the publish rate of {self._rate:g} events/s for this key", retry_after=wait
            )

    def refund(self, key: bytes, events: int) -> None:
        """Give back a charge for a publish that stored nothing."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give_back(events)


class Access:
    """Which channels need a token, and whether given claims open them.

    A private tool needs a token listing it (or ``*``). The firehose carries every
    tool's events, so while any tool is private, the firehose needs a token with
    ``["*"]``.
    """

    def __init__(self, private_tools: frozenset[str], secret: str | None) -> None:
        self._private = private_tools
        self._secret = secret

    def needs_token(self, channel: str) -> bool:
        return channel in self._private or (channel == FIREHOSE and bool(self._private))

    def allows(self, claims: Claims | None, channel: str) -> bool:
        if not self.needs_token(channel):
            return True
        if claims is None:
            return False
        return FIREHOSE in claims.tools if channel == FIREHOSE else claims.allows(channel)

    def verify(self, token: str, now: float) -> Claims:
        """Raises TokenExpired or TokenError (also when this server has no secret)."""
        if not self._secret:
            raise TokenError("this server verifies no tokens (LIVEFEED_SECRET is unset)")
        return verify(token, self._secret, now)


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a browser from ``origin`` may connect. No list means any origin; a request
    without an Origin header is not a browser's cross-site request, so it passes."""
    if not allowed or origin is None:
        return True
    return origin.rstrip("/") in {entry.rstrip("/") for entry in allowed}
