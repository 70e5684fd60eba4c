"""The plain-ASGI outbox's slow-consumer limit, in bytes as the wire counts them."""

from __future__ import annotations

from typing import cast

import orjson
from starlette.websockets import WebSocket

from livefeed.envelope import Batch, Event, envelope_tail
from livefeed.transports.ws import QueueOutbox


def event(seq: int, title: str) -> Event:
    data = orjson.dumps({"title": title})
    return Event("flask", "flask", f"1764040000000-{seq}", envelope_tail("story", 1.0, data))


def test_the_byte_limit_counts_utf8_bytes_not_characters():
    """Non-ASCII text is up to 3 bytes a character (orjson writes it raw): counting
    characters let a queue of CJK stories grow to ~3x the limit before 4008."""
    title = "東京" * 100  # 200 characters, 600 bytes
    one = event(1, title)
    assert len(one.payload) - len(one.text) == 400
    # Never run: only the queue is tested, so no socket is needed.
    outbox = QueueOutbox(cast(WebSocket, None), max_frames=1000, max_bytes=1500)
    outbox.send_batch(Batch([one, event(2, title)]))
    assert not outbox.closed  # ~1,300 bytes queued (~500 characters)
    outbox.send_event(event(3, title))
    assert outbox.closed  # ~1,950 bytes: over the limit, though only ~750 characters
