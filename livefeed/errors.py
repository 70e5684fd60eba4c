"""Errors that cross a module boundary, each with the contract's code and HTTP status.

    LivefeedError                 code, status, message, field
    ├── PublishRejected           nothing of the publish was accepted
    │   ├── BadJson               400 bad_json
    │   ├── Unauthorized          401 unauthorized
    │   ├── TooLarge              413 too_large
    │   ├── InvalidEvent          422 invalid_event (with the offending field)
    │   ├── RateLimited           429 rate_limited (with retry_after seconds)
    │   └── BrokerError           500 broker_error (the broker's data refused it; see below)
    ├── InvalidRequest            400 invalid_tool / invalid_query (reads, not publishes)
    ├── InvalidToken              401 unauthorized (a subscriber token that is invalid or expired)
    ├── Forbidden                 403 forbidden (a private tool without a token allowing it)
    ├── NoRoute                   404 not_found / 405 method_not_allowed under /api/
    ├── Unavailable               503 unavailable: the broker is away; nothing was accepted
    └── OutcomeUnknown            503 outcome_unknown: a publish's reply was lost and the
                                  broker could not be asked whether it was stored

The HTTP API renders any of them as ``{"error": {"code", "message", "field"}}``;
the Python publishers raise them as they are.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LivefeedError(Exception):
    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message if field is None else f"{field}: {message}")
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        # `field` is always there (null when the error is not about one field): the
        # contract gives every error body the same three keys.
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class PublishRejected(LivefeedError):
    """The publish was refused as a whole: nothing of it was stored or delivered."""


class BadJson(PublishRejected):
    code = "bad_json"
    status = 400


class Unauthorized(PublishRejected):
    code = "unauthorized"
    status = 401


class TooLarge(PublishRejected):
    code = "too_large"
    status = 413


class InvalidEvent(PublishRejected):
    code = "invalid_event"
    status = 422


class RateLimited(PublishRejected):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BrokerError(PublishRejected):
    """The broker refused the batch for a reason a retry does not fix, before storing
    any of it: a key under livefeed's prefix in Redis holds another type than
    livefeed keeps there, or the Redis user's ACL does not allow one of the batch's
    writes (the message names the key or channel). An operator must fix Redis."""

    code = "broker_error"
    status = 500


class InvalidRequest(LivefeedError):
    status = 400

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, field)
        self.code = code  # type: ignore[misc]  # invalid_tool or invalid_query


class InvalidToken(LivefeedError):
    code = "unauthorized"
    status = 401


class Forbidden(LivefeedError):
    code = "forbidden"
    status = 403


class NoRoute(LivefeedError):
    """An ``/api/`` path that does not exist, or a method its route does not take."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # 404 or 405, as the router said
        self.code = "method_not_allowed" if status == 405 else "not_found"  # type: ignore[misc]


class Unavailable(LivefeedError):
    """The broker did not take it. For a publish: nothing was stored, retry safely.

    Raised for a publish only when that is known: the command never reached Redis,
    Redis refused it, or its reply was lost and Redis then confirmed (and made sure)
    that it was not stored. Otherwise see :class:`OutcomeUnknown`.
    """

    code = "unavailable"
    status = 503


class OutcomeUnknown(LivefeedError):
    """A publish reached the broker but its reply was lost, and the broker could not
    be asked in time whether it was stored: it may have been stored and delivered.

    A retry is safe only if every event carries an ``idempotency_key`` (it is then
    delivered at most once); without one, a retry may deliver an event twice.
    """

    code = "outcome_unknown"
    status = 503
