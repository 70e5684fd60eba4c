from __future__ import annotations

import jwt
import pytest

from livefeed.auth import Access, origin_allowed
from livefeed.logs import redact
from livefeed.tokens import Claims, TokenError, TokenExpired, mint, verify

SECRET = "a-unit-test-secret-of-32-bytes-ok"
NOW = 1_764_040_000.0


def test_mint_and_verify_round_trip():
    token = mint(SECRET, "laura_garcia", ["flask", "django"], ttl=60, now=NOW)
    claims = verify(token, SECRET, NOW + 30)
    assert claims == Claims("laura_garcia", frozenset({"flask", "django"}), NOW + 60)
    assert claims.allows("flask") and not claims.allows("kubernetes")
    assert verify(mint(SECRET, "a", ["*"], now=NOW), SECRET, NOW).allows("anything")


def test_expiry_uses_the_clock_given():
    token = mint(SECRET, "a", ["flask"], ttl=60, now=NOW)
    with pytest.raises(TokenExpired):
        verify(token, SECRET, NOW + 60)


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": "a", "tools": ["flask"]},  # no exp
        {"sub": "a", "exp": NOW + 60},  # no tools
        {"tools": ["flask"], "exp": NOW + 60},  # no sub
        {"sub": "has space", "tools": ["flask"], "exp": NOW + 60},
        {"sub": "a", "tools": "flask", "exp": NOW + 60},
        {"sub": "a", "tools": ["Flask"], "exp": NOW + 60},
        {"sub": "a", "tools": ["flask"], "exp": "tomorrow"},
        {"sub": "a", "tools": ["flask"], "exp": 10**400},  # no float holds it
        {"sub": "a", "tools": ["flask"], "exp": float("inf")},  # PyJWT reads Infinity
        {"sub": "a", "tools": ["flask"], "exp": float("nan")},
    ],
)
def test_malformed_claims_are_refused(payload: dict):
    with pytest.raises(TokenError):
        verify(jwt.encode(payload, SECRET, algorithm="HS256"), SECRET, NOW)


def test_a_token_from_a_clock_ahead_or_with_an_audience_is_valid_until_its_exp():
    import time

    ahead = time.time() + 30  # the minting host's clock runs ahead: iat is "in the future"
    assert verify(mint(SECRET, "a", ["flask"], now=ahead), SECRET, time.time()).sub == "a"
    other = jwt.encode(
        {"sub": "a", "tools": ["flask"], "exp": NOW + 60, "aud": "livefeed"}, SECRET, "HS256"
    )
    assert verify(other, SECRET, NOW).allows("flask")


def test_mint_refuses_a_string_for_tools():
    with pytest.raises(TokenError, match="tools must be a list"):
        mint(SECRET, "a", "flask", now=NOW)  # type: ignore[arg-type]  # list() would split it


def test_other_keys_and_algorithms_are_refused():
    forged = mint("another-secret-of-at-least-32-bytes", "a", ["*"], now=NOW)
    with pytest.raises(TokenError):
        verify(forged, SECRET, NOW)
    unsigned = jwt.encode({"sub": "a", "tools": ["*"], "exp": NOW + 60}, None, algorithm="none")
    with pytest.raises(TokenError):
        verify(unsigned, SECRET, NOW)


def test_access_rules():
    access = Access(frozenset({"secret-tool"}), SECRET)
    member = Claims("a", frozenset({"secret-tool"}), NOW)
    everything = Claims("a", frozenset({"*"}), NOW)
    assert access.allows(None, "flask") and not access.allows(None, "secret-tool")
    assert access.allows(member, "secret-tool") and not access.allows(member, "*")
    assert access.allows(everything, "*")
    assert Access(frozenset(), None).allows(None, "*")
    with pytest.raises(TokenError):
        Access(frozenset(), None).verify("x", NOW)


def test_origins():
    allowed = ("https://community.example", "https://www.example/")
    assert origin_allowed("https://community.example", allowed)
    assert origin_allowed("https://www.example", allowed)
    assert not origin_allowed("https://evil.example", allowed)
    assert origin_allowed(None, allowed) and origin_allowed("https://any.example", ())


def test_redaction():
    line = '127.0.0.1 - "GET /ws?tools=a&token=eyJ.abc.def HTTP/1.1" Authorization: Bearer k1'
    assert redact(line) == (
        '127.0.0.1 - "GET /ws?tools=a&token=[redacted] HTTP/1.1" Authorization: Bearer [redacted]'
    )
    # websockets logs frames at debug level, cut in the middle: no part of it stays.
    frame = """< TEXT '{"type": "auth", "token": "eyJhbGciOiJIUzI1NiIs...mjILKrvvH-6_uWMKnGr60"}'"""
    assert redact(frame) == """< TEXT '{"type": "auth", "token": "[redacted]"}'"""
