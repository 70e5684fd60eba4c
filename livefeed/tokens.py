"""Subscriber tokens: HS256 JWTs with ``sub`` (the user's handle), ``exp`` and ``tools``
(tool slugs, or ``["*"]`` for every tool). Any JWT library can mint them; so can
:func:`mint`, for the site's own Flask or Django code::

    from livefeed.tokens import mint
    token = mint(secret, sub=user.handle, tools=["flask"], ttl=3600)

Pure: the clock is passed in (``now``, UNIX seconds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jwt

from livefeed.types import FIREHOSE, HANDLE_PATTERN, is_tool

ALGORITHM = "HS256"


class TokenError(Exception):
    """The token is missing, malformed, badly signed, or lacks a required claim."""


class TokenExpired(TokenError):
    """The token was valid, but its ``exp`` has passed."""


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str  # the user's handle, as presence lists it
    tools: frozenset[str]  # tool slugs, or {"*"} for every tool
    exp: float  # UNIX seconds

    def allows(self, channel: str) -> bool:
        return FIREHOSE in self.tools or channel in self.tools


def mint(
    secret: str,
    sub: str,
    tools: Iterable[str],
    ttl: float = 3600,
    now: float | None = None,
) -> str:
    """A token for ``sub`` allowing ``tools`` (slugs, or ``["*"]``), valid ``ttl`` seconds."""
    if isinstance(tools, str):  # list("flask") would allow the tools f, l, a, s and k
        raise TokenError('invalid token: tools must be a list of tool slugs, or ["*"]')
    tools = list(tools)
    _check_claims(sub, tools)
    issued = time.time() if now is None else now
    payload = {"sub": sub, "tools": tools, "iat": int(issued), "exp": int(issued + ttl)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(token: str, secret: str, now: float) -> Claims:
    """The token's claims; raises :class:`TokenExpired` or :class:`TokenError`."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            # exp is checked below against the clock passed in; iat is not checked (a
            # minting host's clock a second ahead made fresh tokens "not yet valid"),
            # nor an aud, which livefeed does not define.
            options={
                "require": ["sub", "exp", "tools"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_aud": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    sub, tools, exp = payload["sub"], payload["tools"], payload["exp"]
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not _finite(exp):
        raise TokenError("invalid token: exp must be a finite number")
    if not isinstance(tools, list):
        raise TokenError('invalid token: tools must be a list of tool slugs, or ["*"]')
    _check_claims(sub, tools)
    if exp <= now:
        raise TokenExpired("the token has expired")
    return Claims(sub, frozenset(tools), float(exp))


def _finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)  # NaN and Infinity are JSON to PyJWT
    except OverflowError:  # an int too large for a float
        return False


def _check_claims(sub: object, tools: Sequence[object]) -> None:
    if not isinstance(sub, str) or HANDLE_PATTERN.fullmatch(sub) is None:
        raise TokenError("invalid token: sub must be a user handle")
    for tool in tools:
        if tool != FIREHOSE and not is_tool(tool):
            raise TokenError(f"invalid token: {tool!r} in tools is not a tool slug")
