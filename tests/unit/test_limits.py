from __future__ import annotations

import random

from livefeed.auth import PublishKeys
from livefeed.backoff import Backoff
from livefeed.errors import RateLimited, Unauthorized
from livefeed.limits import FrameRateLimit, TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.wait_time(0.0) == 0.1
    assert bucket.take(0.1) and not bucket.take(0.1)
    assert bucket.take(100.0, cost=5) and not bucket.take(100.0)  # refill caps at burst


def test_a_cost_above_the_burst_waits_for_a_full_bucket_then_overdraws_it():
    bucket = TokenBucket(rate=10, burst=5, stamp=0.0)
    assert bucket.take(0.0, cost=2)
    assert not bucket.take(0.0, cost=8) and bucket.wait_time(0.0, cost=8) == 0.2  # until full
    assert bucket.take(0.2, cost=8)  # full: taken whole, 3 in debt
    assert bucket.wait_time(0.2) == 0.4 and not bucket.take(0.5)
    assert bucket.take(0.61)
    bucket.give_back(8)  # a refund fills it, no further
    assert bucket.tokens == 5


def test_frame_rate_limit_rejects_once_per_streak_then_closes():
    limit = FrameRateLimit(rate=20, burst=40, now=0.0)
    verdicts = [limit.check(0.0) for _ in range(40 + 40)]
    assert verdicts[:40] == ["ok"] * 40
    assert verdicts[40] == "reject"
    assert set(verdicts[41:79]) == {"drop"}
    assert verdicts[79] == "close"


def test_frame_rate_limit_streak_ends_when_frames_are_accepted_again():
    limit = FrameRateLimit(rate=20, burst=2, now=0.0)
    assert [limit.check(0.0) for _ in range(3)] == ["ok", "ok", "reject"]
    assert limit.check(1.0) == "ok"
    assert limit.streak == 0


def flood(limit: FrameRateLimit, per_second: float, seconds: float) -> tuple[list[str], float]:
    """Frames at a steady rate until the limit closes or time is up: verdicts, close time."""
    verdicts: list[str] = []
    for i in range(int(per_second * seconds)):
        now = i / per_second
        verdicts.append(limit.check(now))
        if verdicts[-1] == "close":
            return verdicts, now
    return verdicts, float("inf")


def test_a_client_going_on_over_the_frame_rate_is_closed_though_some_frames_pass():
    # 25 frames/s against 20: a frame gets through every 50 ms, so no streak is long.
    verdicts, closed_at = flood(FrameRateLimit(rate=20, burst=40, now=0.0), 25, 60)
    assert "ok" in verdicts[-10:]
    # The full bucket lasts 8 s (40 at 25 - 20 a second), then 40 drops at 5 - 1 a second.
    assert 17 < closed_at < 19
    _, closed_at = flood(FrameRateLimit(rate=20, burst=40, now=0.0), 100, 60)
    assert closed_at < 1


def test_a_client_at_the_frame_rate_is_never_closed():
    verdicts, closed_at = flood(FrameRateLimit(rate=20, burst=40, now=0.0), 20, 600)
    assert closed_at == float("inf") and set(verdicts) == {"ok"}
    limit = FrameRateLimit(rate=20, burst=40, now=0.0)
    for burst_at in range(0, 600, 30):  # a burst over the rate now and then is forgiven
        assert "close" not in [limit.check(burst_at) for _ in range(70)]


def test_backoff_has_full_jitter_under_a_growing_cap():
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.1 * 2**i) for i in range(12)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 12
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_publish_keys_accept_any_configured_key_and_nothing_else():
    keys = PublishKeys(("old", "new"), rate=10, burst=10)
    assert keys.check("Bearer old") == b"old"
    assert keys.check("bearer new") == b"new"
    for header in [None, "", "Bearer", "Bearer ", "Basic old", "Bearer olden", "old"]:
        try:
            keys.check(header)
        except Unauthorized:
            continue
        raise AssertionError(f"{header!r} was accepted")


def test_no_configured_keys_means_http_publishing_is_off():
    try:
        PublishKeys((), 1, 1).check("Bearer anything")
    except Unauthorized as exc:
        assert "LIVEFEED_PUBLISH_KEYS" in exc.message
    else:
        raise AssertionError("accepted without keys")


def test_publish_rate_is_per_key_and_says_when_to_retry():
    keys = PublishKeys(("a", "b"), rate=10, burst=20)
    keys.charge(b"a", 20, now=0.0)
    try:
        keys.charge(b"a", 5, now=0.0)
    except RateLimited as exc:
        assert abs(exc.retry_after - 0.5) < 1e-9
    else:
        raise AssertionError("not limited")
    keys.charge(b"b", 20, now=0.0)  # another key has its own bucket
