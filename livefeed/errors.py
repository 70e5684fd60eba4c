"""Errors that cross a module boundary, each with the contract's code and HTTP status.

    LivefeedError                 code, status, message, field
    ├── PublishRejected           nothing of the publish was accepted
    │   ├── BadJson               400 bad_json
    │   ├── Unauthorized          401 unauthorized
    │   ├── TooLarge              413 too_large
    │   ├── InvalidEvent          422 invalid_event (with the offending field)
    │   └── RateLimited           429 rate_limited (with retry_after seconds)
    ├── InvalidRequest            400 invalid_tool / invalid_query (reads, not publishes)
    ├── InvalidToken              401 unauthorized (a subscriber token that is invalid or expired)
    ├── Forbidden                 403 forbidden (a private tool without a token allowing it)
    └── Unavailable               503 unavailable: the broker is away; nothing was accepted

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
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


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


class Unavailable(LivefeedError):
    """The broker did not answer. For a publish: nothing was accepted, retry safely.

    One case is ambiguous and documented: if the connection drops after the publish
    script reached Redis but before its reply, the events may be stored. A retry with
    the same ``idempotency_key`` is then still delivered once.
    """

    code = "unavailable"
    status = 503
