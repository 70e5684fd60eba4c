"""Event-id order, resume cursors, and merging a replay with buffered live events.

Pure: the hub and the SSE transport call these with plain data. Ids are
``<ms>-<seq>`` and compare as integer pairs: ``"9-0" < "10-0"`` although
``"9-0" > "10-0"`` as strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from livefeed.types import EVENT_ID_PATTERN, EventId, is_channel

IdKey = tuple[int, int]

MAX_CURSOR_ENTRIES = 100


# Ids are Redis stream ids: two unsigned 64-bit numbers. Redis refuses a larger one,
# and a range that starts after the largest, which a resume from it would ask for.
_MAX_PART = 2**64 - 1


def parse_id(event_id: object) -> IdKey | None:
    """``"1764040000000-3"`` -> ``(1764040000000, 3)``; anything else, and an id no
    event can have, -> None."""
    if not isinstance(event_id, str):
        return None
    match = EVENT_ID_PATTERN.fullmatch(event_id)
    if match is None:
        return None
    key = int(match[1]), int(match[2])
    if key[0] > _MAX_PART or key[1] > _MAX_PART or key == (_MAX_PART, _MAX_PART):
        return None
    return key


def format_id(key: IdKey) -> EventId:
    return f"{key[0]}-{key[1]}"


def is_recoverable(
    since: IdKey, first: IdKey | None, last: IdKey | None, max_deleted: IdKey
) -> bool:
    """Whether every event after ``since`` is still in a history.

    ``first`` is the oldest kept id, ``last`` the last id ever assigned, and
    ``max_deleted`` the newest id trimmed away ((0, 0) if none was). Trimming
    removes the oldest first, so: a cursor at or after ``first`` lost nothing; a
    cursor before ``first`` lost nothing only if it is itself the newest trimmed id.
    A cursor this history never issued (after ``last``, or before ``first`` and not
    trimmed, as after Redis lost its data) cannot be vouched for. The cursor
    ``(0, 0)`` means "from the very beginning": covered while nothing was trimmed.
    """
    if since == (0, 0):
        return max_deleted == (0, 0)
    if last is None or since > last:
        return False
    if first is not None and since >= first:
        return True
    return since == max_deleted


class _Keyed(Protocol):
    @property
    def key(self) -> IdKey: ...


E = TypeVar("E", bound=_Keyed)


def merge(replay: Sequence[E], buffered: Iterable[E], after: IdKey | None = None) -> list[E]:
    """The replay, then the buffered live events it does not already cover.

    ``replay`` comes from history, oldest first; ``buffered`` arrived live while it
    was read, in publish order. The result is strictly increasing: anything at or
    before the last replayed id (or ``after``, the client's cursor) is dropped, so
    nothing is repeated, and because the live subscription was taken before the
    history read, nothing is lost.
    """
    out: list[E] = []
    last = after
    for event in (*replay, *buffered):
        if last is None or event.key > last:
            out.append(event)
            last = event.key
    return out


def encode_cursor(positions: Mapping[str, EventId]) -> str:
    """An SSE ``id:`` covering every channel of a stream: ``flask:1-0,*:7-2``."""
    return ",".join(f"{channel}:{event_id}" for channel, event_id in positions.items())


def decode_cursor(text: str, max_entries: int = MAX_CURSOR_ENTRIES) -> dict[str, EventId]:
    """Inverse of :func:`encode_cursor`; raises ValueError on anything malformed, and on
    more than ``max_entries`` channels."""
    positions: dict[str, EventId] = {}
    if not text.strip():
        return positions
    for part in text.split(","):
        channel, sep, event_id = part.strip().partition(":")
        if not sep or not is_channel(channel) or parse_id(event_id) is None:
            raise ValueError(f"bad cursor entry {part!r}")
        positions[channel] = event_id
        if len(positions) > max_entries:
            raise ValueError("cursor names too many channels")
    return positions
