"""Property tests: the frame parser and the publish validator refuse anything with
their own errors and never crash, and what they accept is what the contract says."""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from livefeed.envelope import envelope, envelope_tail
from livefeed.errors import InvalidRequest, PublishRejected
from livefeed.events import parse_body, prepare
from livefeed.history import decode_cursor
from livefeed.protocol import FrameError, parse_client_frame
from livefeed.transports.api import _limit
from livefeed.transports.sse import _subscribe_frame

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
keys = st.sampled_from(
    [
        "type",
        "ref",
        "tools",
        "history",
        "since",
        "presence",
        "token",
        "kind",
        "data",
        "events",
        "idempotency_key",
        "author",
        "handle",
        "title",
        "body",
        "url",
        "tags",
        "trending",
        "actor",
        "verb",
        "tool",
        "name",
        "avatar_url",
    ]
)
plausible = st.recursive(
    json_scalars | st.sampled_from(["subscribe", "story", "activity", "flask", "*", "1-0"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text() | st.binary())
def test_frame_parser_refuses_garbage_with_frame_errors(text: str | bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_client_frame(text)


@FUZZ
@given(plausible)
def test_frame_parser_on_json_shaped_input(value: Any) -> None:
    try:
        parse_client_frame(json.dumps(value))  # stdlib: also integers past 64 bits
    except FrameError as exc:
        assert exc.code.value in {"bad_frame", "unknown_type"}


@FUZZ
@given(st.binary())
def test_publish_body_garbage_is_refused_cleanly(body: bytes) -> None:
    with contextlib.suppress(PublishRejected):
        parse_body(body)


@FUZZ
@given(plausible)
def test_publish_documents_are_accepted_or_refused_with_a_field(document: Any) -> None:
    try:
        batch = prepare(document)
    except PublishRejected as exc:
        assert exc.status in {400, 413, 422}
        return
    for event in batch.events:  # anything accepted is complete and well-formed
        assert event.kind in {"story", "activity"} and event.tools
        assert isinstance(orjson.loads(event.data), dict)


handles = st.from_regex(r"\A[A-Za-z0-9_.-]{1,64}\Z")
tools = st.from_regex(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
stories = st.fixed_dictionaries(
    {
        "kind": st.just("story"),
        "tools": st.lists(tools, min_size=1, max_size=5, unique=True),
        "data": st.fixed_dictionaries(
            {
                "author": st.fixed_dictionaries({"handle": handles}),
                "title": st.text(min_size=1, max_size=300),
            },
            optional={
                "body": st.text(max_size=500),
                "trending": st.booleans(),
                "tags": st.lists(st.text(max_size=50), max_size=20),
                "url": st.from_regex(r"\Ahttps?://[a-z]{1,20}\.example/[a-z0-9]{0,20}\Z"),
            },
        ),
    }
)


@FUZZ
@given(stories, st.floats(min_value=0, max_value=4e9))
def test_valid_stories_are_accepted_and_their_envelope_is_exact(
    story: dict[str, Any], ts: float
) -> None:
    [event] = prepare(story).events
    assert event.tools == tuple(story["tools"])
    data = orjson.loads(event.data)
    for name, value in story["data"].items():
        if name == "author":
            assert data["author"]["handle"] == value["handle"]
        else:
            assert data[name] == value

    built = orjson.loads(
        envelope(event.tools[0], "1-0", envelope_tail("story", ts, event.data), event.tools[0])
    )
    assert built == {
        "type": "event",
        "tool": event.tools[0],
        "id": "1-0",
        "kind": "story",
        "ts": ts,
        "data": data,
    }


@FUZZ
@given(st.text())
def test_cursor_decoding_only_raises_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        decode_cursor(text)


@FUZZ
@given(st.text())
@example("\u00b2")  # a digit to str.isdigit, not to int()
@example("\u0661")  # a digit to both, but not an ASCII one
@example("0" * 4300 + "5")  # more digits than int() reads
def test_numbers_in_a_query_are_taken_or_refused_with_a_400(text: str) -> None:
    query = urlencode({"tools": "flask", "history": text}).encode()
    request = Request({"type": "http", "query_string": query, "headers": []})
    with contextlib.suppress(InvalidRequest):
        assert _subscribe_frame(request, 10).history == int(text)
    with contextlib.suppress(InvalidRequest):
        assert _limit(text, 100) == int(text)
