"""Every WebSocket frame type and error code, against real server processes
(embedded broker and Redis)."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import StartServer
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.server import ServerProcess


async def connected(server: ServerProcess, **query: str) -> WsClient:
    client = await WsClient.open(server.ws_url, **query)
    await client.welcome()
    return client


async def test_welcome_comes_first_with_an_id_and_the_heartbeat(server: ServerProcess):
    client = await WsClient.open(server.ws_url)
    welcome = await client.recv()
    assert welcome["type"] == "welcome" and welcome["heartbeat"] == 25
    assert isinstance(welcome["connection_id"], str) and welcome["connection_id"]
    other = await WsClient.open(server.ws_url)
    assert (await other.recv())["connection_id"] != welcome["connection_id"]
    await client.close()
    await other.close()


async def test_subscribe_answers_each_tool_with_its_ref_then_events_flow(server: ServerProcess):
    flask, django = unique_tool("flask"), unique_tool("django")
    client = await connected(server)
    await client.send({"type": "subscribe", "tools": [flask, django], "ref": "1"})
    replies = [await client.expect("subscribed"), await client.expect("subscribed")]
    assert replies == [
        {"type": "subscribed", "tool": flask, "ref": "1", "presence": 1},
        {"type": "subscribed", "tool": django, "ref": "1", "presence": 1},
    ]
    [ids] = [await publish_ok(server.url, story([flask, django], "Both"))]
    first, second = await client.events(2)
    assert (first["tool"], first["id"]) == (flask, ids[0]["id"])
    assert (second["tool"], second["id"]) == (django, ids[1]["id"])
    assert first["kind"] == "story" and first["data"]["title"] == "Both"
    assert set(first) == {"type", "tool", "id", "kind", "ts", "data"}
    assert isinstance(first["ts"], float)
    await client.close()


async def test_query_tools_subscribe_at_once_without_history(server: ServerProcess):
    a, b = unique_tool(), unique_tool()
    await publish_ok(server.url, story([a], "before"))
    client = await WsClient.open(server.ws_url, tools=f"{a},{b}")
    await client.welcome()
    assert [await client.expect("subscribed") for _ in range(2)] == [
        {"type": "subscribed", "tool": a, "presence": 1},
        {"type": "subscribed", "tool": b, "presence": 1},
    ]
    await publish_ok(server.url, story([b], "after"))
    [event] = await client.events(1)
    assert event["data"]["title"] == "after"  # nothing replayed from before
    await client.close()


async def test_history_replays_the_last_n_before_live_events(server: ServerProcess):
    tool = unique_tool()
    published = [await publish_ok(server.url, story([tool], f"s{i}")) for i in range(5)]
    client = await connected(server)
    await client.subscribe([tool], history=3)
    replay = await client.events(3)
    assert [e["id"] for e in replay] == [p[0]["id"] for p in published[2:]]
    [live] = await publish_ok(server.url, story([tool], "live"))
    assert (await client.events(1))[0]["id"] == live["id"]
    await client.close()


async def test_a_subscribe_asking_for_position_learns_where_each_stream_starts(
    server: ServerProcess,
):
    """livefeed's extension, as SSE's `event: position`: a client that got no event of
    a tool still has a cursor to resume from; one that does not ask gets no frame."""
    quiet, busy, fresh = unique_tool("quiet"), unique_tool("busy"), unique_tool("fresh")
    [old] = await publish_ok(server.url, story([quiet], "before the subscribe"))
    replayed = [(await publish_ok(server.url, story([busy], f"b{i}")))[0] for i in range(3)]
    client = await connected(server)
    await client.send({"type": "subscribe", "tools": [quiet], "position": True})
    await client.expect("subscribed")
    assert await client.recv() == {"type": "position", "tool": quiet, "id": old["id"]}
    await client.subscribe([busy], history=2, position=True)
    assert [e["id"] for e in await client.events(2)] == [r["id"] for r in replayed[1:]]
    assert await client.recv() == {"type": "position", "tool": busy, "id": replayed[2]["id"]}
    await client.subscribe([fresh], position=True)  # nothing published yet: the start
    assert await client.recv() == {"type": "position", "tool": fresh, "id": "0-0"}
    plain = await connected(server)
    await plain.subscribe([quiet])
    [marker] = await publish_ok(server.url, story([quiet], "marker"))
    assert (await plain.recv())["id"] == marker["id"]  # no position frame before it
    for each in (client, plain):
        await each.close()


async def test_unsubscribe_stops_events_and_is_answered(server: ServerProcess):
    gone, marker = unique_tool(), unique_tool()
    client = await connected(server)
    await client.subscribe([gone, marker])
    await client.send({"type": "unsubscribe", "tools": [gone], "ref": "2"})
    assert await client.recv() == {"type": "unsubscribed", "tool": gone, "ref": "2"}
    await publish_ok(server.url, story([gone], "unwanted"))
    await publish_ok(server.url, story([marker], "marker"))
    [event] = await client.events(1)
    assert event["tool"] == marker  # the unsubscribed tool's event, published first, never came
    await client.close()


async def test_ping_is_answered_with_pong_and_its_ref(server: ServerProcess):
    client = await connected(server)
    await client.send({"type": "ping", "ref": "4"})
    assert await client.recv() == {"type": "pong", "ref": "4"}
    await client.send({"type": "ping"})
    assert await client.recv() == {"type": "pong"}
    await client.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"type": "subscribe", "tools": "flask", "ref": "r"}', "bad_frame"),
        ('{"type": "subscribe", "tools": ["a"], "histroy": 3, "ref": "r"}', "bad_frame"),
        ('{"type": "subscribe", "tools": ["a"], "position": "yes", "ref": "r"}', "bad_frame"),
        ('{"type": "publish", "ref": "r"}', "unknown_type"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_open(
    server: ServerProcess, frame: str, code: str
):
    client = await connected(server)
    await client.send(frame)
    error = await client.expect("error")
    assert error["code"] == code and error["message"]
    if '"ref"' in frame:
        assert error["ref"] == "r"
    await client.send({"type": "ping", "ref": "still-open"})
    assert await client.recv() == {"type": "pong", "ref": "still-open"}
    await client.close()


async def test_binary_frames_are_refused(server: ServerProcess):
    client = await connected(server)
    await client.send(b'{"type": "ping"}')
    assert (await client.expect("error"))["code"] == "bad_frame"
    await client.close()


async def test_an_invalid_tool_is_refused_alone_and_the_others_are_subscribed(
    server: ServerProcess,
):
    good = unique_tool()
    client = await connected(server)
    await client.send({"type": "subscribe", "tools": ["Not A Tool", good, "x" * 70], "ref": "1"})
    first = await client.expect("error")
    assert first["code"] == "invalid_tool" and first["tool"] == "Not A Tool"
    assert first["ref"] == "1"
    assert (await client.expect("error"))["code"] == "invalid_tool"
    assert (await client.expect("subscribed"))["tool"] == good
    [ids] = [await publish_ok(server.url, story([good]))]
    assert (await client.events(1))[0]["id"] == ids[0]["id"]
    await client.close()


async def test_a_bad_cursor_refuses_its_tool_alone_and_a_resubscribe_says_recovered(
    server: ServerProcess,
):
    broken, good = unique_tool("broken"), unique_tool("good")
    client = await connected(server)
    cursors = {broken: "garbage"}
    await client.send({"type": "subscribe", "tools": [broken, good], "since": cursors, "ref": 1})
    error = await client.expect("error")
    assert (error["code"], error["tool"], error["ref"]) == ("bad_frame", broken, 1)
    assert (await client.expect("subscribed"))["tool"] == good
    published = await publish_ok(server.url, story([broken, good]))
    [event] = await client.events(1)
    assert event["tool"] == good  # not the refused tool
    assert event["id"] == next(p["id"] for p in published if p["tool"] == good)
    # Subscribed already: no replay; "recovered" says whether history covers the
    # cursor (as for a new subscription); a malformed cursor is ignored, and the
    # subscription stays in every case.
    for cursor, recovered in ((event["id"], True), ("1-0", False), ("garbage", None)):
        await client.send({"type": "subscribe", "tools": [good], "since": {good: cursor}})
        again = await client.expect("subscribed")
        assert (again["tool"], again.get("recovered")) == (good, recovered)
    [later] = await publish_ok(server.url, story([good]))
    assert (await client.events(1))[0]["id"] == later["id"]
    # A bad cursor is looked at only once the tool itself may be subscribed.
    await client.send({"type": "subscribe", "tools": ["Bad!"], "since": {"Bad!": "x"}})
    assert (await client.expect("error"))["code"] == "invalid_tool"
    await client.close()


async def test_the_firehose_is_subscribable_and_marks_its_events(server: ServerProcess):
    tool = unique_tool()
    client = await connected(server)
    await client.subscribe(["*"])
    await publish_ok(server.url, story([tool], "to the firehose"))
    # Earlier tests on this shared server published too: find ours.
    while (event := (await client.events(1))[0])["tool"] != tool:
        assert event["channel"] == "*"
    assert event["channel"] == "*" and event["data"]["title"] == "to the firehose"
    await client.close()


async def test_auth_without_a_configured_secret_is_unauthorized(server: ServerProcess):
    client = await connected(server)
    await client.send({"type": "auth", "token": "abc", "ref": "3"})
    error = await client.expect("error")
    assert error["code"] == "unauthorized" and error["ref"] == "3"
    await client.close()


async def test_a_frame_over_4_kib_closes_with_1009(server: ServerProcess):
    client = await connected(server)
    await client.send(orjson.dumps({"type": "ping", "ref": "x" * 5000}).decode())
    assert await client.closed_with() == 1009


async def test_too_many_subscriptions(start_server: StartServer):
    server = start_server({"LIVEFEED_MAX_SUBSCRIPTIONS": "2"})
    client = await connected(server)
    await client.send({"type": "subscribe", "tools": ["a", "b", "c"], "ref": "1"})
    error = await client.expect("error")
    assert error == {
        "type": "error",
        "code": "too_many_subscriptions",
        "tool": "c",
        "ref": "1",
        "message": error["message"],
    }
    assert [(await client.expect("subscribed"))["tool"] for _ in range(2)] == ["a", "b"]
    await client.send({"type": "subscribe", "tools": ["d"]})
    assert (await client.expect("error"))["code"] == "too_many_subscriptions"
    await client.send({"type": "unsubscribe", "tools": ["a"]})
    await client.expect("unsubscribed")
    assert (await client.subscribe(["d"]))[0]["tool"] == "d"
    await client.close()


async def test_over_the_frame_rate_is_rate_limited_then_closed_with_4029(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_FRAME_RATE": "0.1", "LIVEFEED_FRAME_BURST": "3"})
    client = await connected(server)
    for i in range(3):
        await client.send({"type": "ping", "ref": i})
        assert (await client.recv())["type"] == "pong"
    await client.send({"type": "ping", "ref": "over"})
    error = await client.expect("error")
    assert error["code"] == "rate_limited"
    for _ in range(2):  # the streak goes on: silently dropped, then closed
        await client.send({"type": "ping"})
    assert await client.closed_with() == 4029


async def test_binary_frames_count_against_the_frame_rate(start_server: StartServer):
    server = start_server({"LIVEFEED_FRAME_RATE": "0.1", "LIVEFEED_FRAME_BURST": "3"})
    client = await connected(server)
    for _ in range(3):
        await client.send(b"\x00")
        assert (await client.expect("error"))["code"] == "bad_frame"
    await client.send(b"\x00")
    assert (await client.expect("error"))["code"] == "rate_limited"
    for _ in range(2):  # as with text frames: silently dropped, then closed
        await client.send(b"\x00")
    assert await client.closed_with() == 4029
