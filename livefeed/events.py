"""Story and activity schemas, publish validation with field paths, and the envelope.

Pure: no I/O. A publish body becomes a :class:`PreparedBatch` or raises a
:class:`~livefeed.errors.PublishRejected` naming the offending field
(``events[3].data.title``). A batch is validated whole before anything is stored.

Validation uses msgspec: strict types (no ``"1"`` for ``1``), unknown fields
rejected, and error paths we can hand back to the publisher unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
import orjson

from livefeed.errors import BadJson, InvalidEvent, TooLarge
from livefeed.types import ToolSlug

MAX_DATA_BYTES: Final = 64 * 1024
"""Event data, encoded, may not exceed this (contract: 64 KiB)."""

# msgspec matches patterns with re.search, so each is anchored; \Z (not $) refuses a
# trailing newline.
# The contract's slug, for tools and activity verbs alike.
_Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}\Z")]
_Handle = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}\Z")]
_Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/?#]+[^\s]*\Z", max_length=2048)]
_Name = Annotated[str, msgspec.Meta(max_length=100)]
_Tag = Annotated[str, msgspec.Meta(max_length=50)]  # the contract sets no minimum
_IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class Author(msgspec.Struct, forbid_unknown_fields=True):
    handle: _Handle
    name: _Name | None = None
    title: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    avatar_url: _Url | None = None


class Actor(msgspec.Struct, forbid_unknown_fields=True):
    handle: _Handle
    name: _Name | None = None
    avatar_url: _Url | None = None


class StoryData(msgspec.Struct, forbid_unknown_fields=True):
    author: Author
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    body: Annotated[str, msgspec.Meta(max_length=5000)] = ""
    url: _Url | None = None
    tags: Annotated[list[_Tag], msgspec.Meta(max_length=20)] = []
    trending: bool = False


class ActivityData(msgspec.Struct, forbid_unknown_fields=True):
    actor: Actor
    verb: _Slug
    tool: _Slug


class StoryRequest(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="story"):
    tools: Annotated[list[_Slug], msgspec.Meta(min_length=1, max_length=20)]
    data: StoryData
    idempotency_key: _IdempotencyKey | None = None


class ActivityRequest(msgspec.Struct, forbid_unknown_fields=True, tag_field="kind", tag="activity"):
    data: ActivityData
    tools: list[_Slug] | None = None
    idempotency_key: _IdempotencyKey | None = None


_Request = StoryRequest | ActivityRequest
# msgspec caches how to convert to a Struct on the class, but rebuilds it for a union on
# every call (6-8 us of a 15 us validation): a known kind goes straight to its Struct,
# which checks the tag too; anything else to the union, for its errors.
_BY_KIND: dict[str, type[StoryRequest] | type[ActivityRequest]] = {
    "story": StoryRequest,
    "activity": ActivityRequest,
}


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Any]


Kind = Literal["story", "activity"]


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """One validated publish request, ready for the broker.

    ``data`` is the event data encoded once; the broker stores it and every
    process builds envelopes around it without decoding it again.
    """

    kind: Kind
    tools: tuple[ToolSlug, ...]
    data: bytes
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    events: tuple[PreparedEvent, ...]

    @property
    def deliveries(self) -> int:
        """How many tool events this batch creates (its cost for rate limiting)."""
        return sum(len(event.tools) for event in self.events)


_ERROR_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD_NAMED = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]*)`")


def _field_of(error: msgspec.ValidationError, prefix: str) -> tuple[str, str | None]:
    """Turn msgspec's ``... - at `$.data.title``` into (message, ``data.title``)."""
    match = _ERROR_PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    message = match["message"]
    path = (match["path"] or "").lstrip(".")
    named = _FIELD_NAMED.match(message)
    if named:  # point at the unknown or missing field itself, not its parent
        path = f"{path}.{named['name']}" if path else named["name"]
    field = f"{prefix}.{path}" if prefix and path else (prefix or path or None)
    if field is not None:
        field = field.replace(".[", "[")
    return message, field


def _prepare_one(raw: Any, prefix: str) -> PreparedEvent:
    tag = raw.get("kind") if isinstance(raw, dict) else None
    target = _BY_KIND.get(tag, _Request) if isinstance(tag, str) else _Request
    try:
        request = msgspec.convert(raw, target)
    except msgspec.ValidationError as exc:
        message, field = _field_of(exc, prefix)
        raise InvalidEvent(message, field) from None
    at = f"{prefix}." if prefix else ""
    if isinstance(request, StoryRequest):
        tools = tuple(request.tools)
        for index, tool in enumerate(tools):
            if tool in tools[:index]:
                raise InvalidEvent(f"tool {tool!r} is listed twice", f"{at}tools[{index}]")
    else:
        tools = (request.data.tool,)
        if request.tools is not None and tuple(request.tools) != tools:
            raise InvalidEvent(
                "an activity is published to its data.tool; leave tools out or make it "
                f'["{request.data.tool}"]',
                f"{at}tools",
            )
    try:
        data = msgspec.json.encode(request.data)
        if request.idempotency_key is not None:
            request.idempotency_key.encode()
    except UnicodeEncodeError:  # over HTTP orjson refused it already, as bad JSON
        raise InvalidEvent(
            "text must be valid Unicode: a lone surrogate (U+D800-U+DFFF) cannot be sent",
            _unencodable(raw, prefix),
        ) from None
    if len(data) > MAX_DATA_BYTES:
        raise InvalidEvent(
            f"event data is {len(data)} bytes encoded; the limit is {MAX_DATA_BYTES}",
            f"{at}data",
        )
    kind: Kind = "story" if isinstance(request, StoryRequest) else "activity"
    return PreparedEvent(kind, tools, data, request.idempotency_key)


def _unencodable(value: Any, path: str) -> str | None:
    """The path of the first string in ``value`` that is not valid Unicode (of its
    object, for a key), named as ``_field_of`` names fields."""
    if isinstance(value, str):
        return None if _encodable(value) else path or None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not _encodable(key):
                return path or None
            found = _unencodable(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _unencodable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def prepare(document: Any, max_batch: int = 1000) -> PreparedBatch:
    """Validate a decoded publish document: one event, or ``{"events": [...]}``.

    Raises :class:`InvalidEvent` (422) or :class:`TooLarge` (413, too many events).
    Nothing is returned unless every event is valid.
    """
    if not isinstance(document, dict):
        raise InvalidEvent('expected a JSON object: one event or {"events": [...]}')
    if "events" not in document:
        return PreparedBatch((_prepare_one(document, ""),))
    try:
        batch = msgspec.convert(document, _Batch)
    except msgspec.ValidationError as exc:
        message, field = _field_of(exc, "")
        raise InvalidEvent(message, field) from None
    if not batch.events:
        raise InvalidEvent("a batch holds at least one event", "events")
    if len(batch.events) > max_batch:
        raise TooLarge(
            f"a batch holds at most {max_batch} events, this one has {len(batch.events)}",
            "events",
        )
    return PreparedBatch(
        tuple(_prepare_one(raw, f"events[{i}]") for i, raw in enumerate(batch.events))
    )


def parse_body(body: bytes, max_batch: int = 1000) -> PreparedBatch:
    """Decode and validate an HTTP publish body (size limits are the caller's)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJson(f"the body is not valid JSON: {exc}") from None
    return prepare(document, max_batch)
