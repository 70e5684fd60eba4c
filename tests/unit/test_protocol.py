"""Client frame parsing and server frame encoding, byte by byte where it matters."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from livefeed import protocol
from livefeed.protocol import (
    CLOSE_ADVICE,
    Auth,
    CloseCode,
    ErrorCode,
    FrameError,
    Ping,
    Subscribe,
    Unsubscribe,
    parse_client_frame,
)


def bad(text: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(text)
    return caught.value


def test_subscribe_with_every_option():
    frame = parse_client_frame(
        '{"type":"subscribe","tools":["flask","*","flask"],"history":20,'
        '"since":{"flask":"1764040000000-0"},"presence":true,"ref":"1"}'
    )
    assert frame == Subscribe(("flask", "*"), 20, {"flask": "1764040000000-0"}, True, "1")


def test_other_frames():
    assert parse_client_frame('{"type":"unsubscribe","tools":["a"],"ref":2}') == Unsubscribe(
        ("a",), 2
    )
    assert parse_client_frame('{"type":"auth","token":"t"}') == Auth("t")
    assert parse_client_frame('{"type":"ping","ref":"4"}') == Ping("4")


def test_invalid_tool_names_are_not_a_frame_error():
    # Each tool is judged by the session, so the others can still be subscribed.
    assert parse_client_frame('{"type":"subscribe","tools":["Not A Tool"]}').tools == (
        "Not A Tool",
    )


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", ErrorCode.BAD_FRAME),
        ("[1]", ErrorCode.BAD_FRAME),
        ('"subscribe"', ErrorCode.BAD_FRAME),
        ("{}", ErrorCode.BAD_FRAME),
        ('{"type":7}', ErrorCode.BAD_FRAME),
        ('{"type":"publish"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"subscribe"}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":[]}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":"flask"}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":[1]}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"history":101}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"history":-1}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"history":true}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"history":2.5}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"since":{"b":"1-0"}}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"since":["1-0"]}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"presence":"yes"}', ErrorCode.BAD_FRAME),
        ('{"type":"subscribe","tools":["a"],"histroy":20}', ErrorCode.BAD_FRAME),
        ('{"type":"auth"}', ErrorCode.BAD_FRAME),
        ('{"type":"auth","token":""}', ErrorCode.BAD_FRAME),
        ('{"type":"ping","ref":{"a":1}}', ErrorCode.BAD_FRAME),
        ('{"type":"ping","ref":"' + "r" * 65 + '"}', ErrorCode.BAD_FRAME),
    ],
)
def test_frames_refused_with_their_code(text: str, code: ErrorCode):
    assert bad(text).code == code


def test_the_ref_of_a_refused_frame_is_kept_when_it_can_be_read():
    assert bad('{"type":"nope","ref":"9"}').ref == "9"
    assert bad('{"type":"subscribe","tools":[],"ref":3}').ref == 3
    assert "histroy" in bad('{"type":"subscribe","tools":["a"],"histroy":1}').message


def test_server_frames_encode_the_contract_shapes():
    assert orjson.loads(protocol.welcome("c1", 25.0)) == {
        "type": "welcome",
        "connection_id": "c1",
        "heartbeat": 25,
    }
    assert orjson.loads(protocol.subscribed("flask", "1", 12, True)) == {
        "type": "subscribed",
        "tool": "flask",
        "ref": "1",
        "presence": 12,
        "recovered": True,
    }
    assert "recovered" not in orjson.loads(protocol.subscribed("flask", None, 0, None))
    assert "ref" not in orjson.loads(protocol.subscribed("flask", None, 0, None))
    assert orjson.loads(protocol.unsubscribed("flask", "2")) == {
        "type": "unsubscribed",
        "tool": "flask",
        "ref": "2",
    }
    assert orjson.loads(protocol.pong("4")) == {"type": "pong", "ref": "4"}
    assert orjson.loads(protocol.error(ErrorCode.INVALID_TOOL, "m", "1", "Bad")) == {
        "type": "error",
        "code": "invalid_tool",
        "message": "m",
        "ref": "1",
        "tool": "Bad",
    }
    assert orjson.loads(protocol.presence("flask", 13, ["laura_garcia"])) == {
        "type": "presence",
        "tool": "flask",
        "count": 13,
        "users": ["laura_garcia"],
    }


def test_every_close_code_has_advice():
    assert set(CLOSE_ADVICE) == set(CloseCode)
    assert CLOSE_ADVICE[CloseCode.FORBIDDEN][0] == "no"
    assert CLOSE_ADVICE[CloseCode.SLOW_CONSUMER][0] == "resume"


def test_the_close_code_table_in_docs_gives_the_same_advice():
    """docs/protocol.md renders CLOSE_ADVICE for client authors: they must agree."""
    said = {"reconnect and resume": "resume", "reconnect later": "later"}
    said |= {"reconnect with a fresh token": "new token", "not reconnect": "no"}
    page = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    table = page.split("### Close codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{4}) \| .* \| ([^|]+?) \|$", table, re.MULTILINE)
    documented = {int(code): next(v for k, v in said.items() if advice.startswith(k))
                  for code, advice in rows}  # fmt: skip
    assert documented == {int(code): advice for code, (advice, _) in CLOSE_ADVICE.items()}


def test_a_cursor_that_is_not_an_id_is_set_aside_for_its_tool_alone():
    text = '{"type":"subscribe","tools":["a","b","c"],"since":{"a":"latest","b":"1-0","c":null}}'
    frame = protocol.parse_client_frame(text)
    assert isinstance(frame, protocol.Subscribe)
    assert frame.since == {"b": "1-0"}
    assert (
        set(frame.bad_since) == {"a", "c"}
        and "since.a: expected an event id" in frame.bad_since["a"]
    )
