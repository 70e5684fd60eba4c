"""Server-Sent Events: framing, history, presence, keepalive, Last-Event-ID resume."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from tests.conftest import StartServer
from tests.support.clients import (
    WsClient,
    activity,
    presence_count,
    publish_ok,
    story,
    unique_tool,
)
from tests.support.server import ServerProcess, scrape
from tests.support.sse import SseStream, StalledReader, open_sse
from tests.support.timing import TIMEOUT, async_wait_until


async def stream(
    http: httpx.AsyncClient, server: ServerProcess, query: str, last_event_id: str | None = None
) -> SseStream:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else None
    sse = await open_sse(http, f"{server.url}/sse?{query}", headers)
    assert sse.response.status_code == 200
    return sse


async def live(sse: SseStream, count: int = 1) -> None:
    """Wait until ``count`` subscriptions are live (each sends ``subscribed``)."""
    for _ in range(count):
        await sse.wait_for("subscribed")


async def test_events_arrive_as_named_sse_messages_with_a_cursor(server: ServerProcess):
    a = unique_tool()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={a},%20,")  # blank names are skipped
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        assert sse.response.headers["cache-control"] == "no-cache"
        assert (await sse.next()).data == "" and sse.messages == []  # the retry: line
        await live(sse)
        [ids] = [await publish_ok(server.url, story([a], "over sse"))]
        while (message := await sse.next()).event != "story":
            assert message.event in {"message", "subscribed", "position"}

        envelope = message.json()
        assert envelope["id"] == ids[0]["id"] and envelope["data"]["title"] == "over sse"
        assert message.id == f"{a}:{ids[0]['id']}"
        [done] = await publish_ok(server.url, activity(a))  # each event is `event: <kind>`
        while (message := await sse.next()).event != "activity":
            assert message.event == "position"
        assert message.json()["id"] == done["id"] and message.id == f"{a}:{done['id']}"
        await sse.response.aclose()


async def test_history_and_an_invalid_request(server: ServerProcess):
    a = unique_tool()
    ids = [(await publish_ok(server.url, story([a], f"h{i}")))[0]["id"] for i in range(4)]
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={a}&history=2")
        assert [e["id"] for e in await sse.events(2)] == ids[2:]
        await sse.response.aclose()
        for query, code in [
            ("tools=Bad%20Tool", "invalid_tool"),
            ("", "invalid_query"),
            (f"tools={a}&history=101", "invalid_query"),
            (f"tools={a}&history=%C2%B2", "invalid_query"),  # "²": a digit to isdigit()
            (f"tools={a}&history={'0' * 4301}", "invalid_query"),  # too long for int()
            (f"tools={a}&presence=2", "invalid_query"),  # was taken for "no presence"
        ]:
            response = await http.get(f"{server.url}/sse?{query}")
            assert response.status_code == 400
            assert response.json()["error"]["code"] == code


async def test_last_event_id_resumes_every_tool_of_the_stream(server: ServerProcess):
    a, b = unique_tool(), unique_tool()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={a},{b}")
        await live(sse, 2)
        first = [(await publish_ok(server.url, story([t], "before")))[0]["id"] for t in (a, b)]
        assert [e["id"] for e in await sse.events(2)] == first
        cursor = sse.last_event_id
        assert cursor == f"{a}:{first[0]},{b}:{first[1]}"
        await sse.response.aclose()
        missed = [
            (await publish_ok(server.url, story([t], "while away")))[0]["id"] for t in (b, a, b)
        ]
        again = await stream(http, server, f"tools={a},{b}&history=50", last_event_id=cursor)
        # Each tool resumes after its own cursor, tools in the stream's order: exactly
        # the missed events, none of those seen before, none twice.
        resumed = await again.events(3)
        assert [e["id"] for e in resumed] == [missed[1], missed[0], missed[2]]

        [later] = await publish_ok(server.url, story([a], "live again"))
        assert (await again.events(1))[0]["id"] == later["id"]
        await again.response.aclose()


async def test_a_subscription_with_no_events_yet_still_gets_a_cursor(server: ServerProcess):
    a = unique_tool()
    await publish_ok(server.url, story([a], "old"))
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={a}")
        await live(sse)
        position = await sse.next()
        assert position.event == "position" and position.id
        assert position.json()["tool"] == a and position.id == f"{a}:{position.json()['id']}"
        await sse.response.aclose()
        [missed] = await publish_ok(server.url, story([a], "missed"))
        again = await stream(http, server, f"tools={a}", last_event_id=sse.last_event_id)
        assert (await again.events(1))[0]["id"] == missed["id"]
        await again.response.aclose()


async def test_presence_frames_when_asked(server: ServerProcess):
    a = unique_tool()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={a}&presence=1")
        subscribed = (await sse.wait_for("subscribed")).json()
        assert subscribed["presence"] == 1
        ws = await WsClient.open(server.ws_url, tools=a)
        while (frame := (await sse.wait_for("presence")).json())["count"] != 2:
            pass
        assert frame == {"type": "presence", "tool": a, "count": 2, "users": []}
        await ws.close()
        await sse.response.aclose()


async def test_a_quiet_stream_gets_keepalive_comments_with_a_ping_a_browser_sees(
    start_server: StartServer,
):
    """The comment keeps proxies open; EventSource hides comments, so the same message
    carries an `event: ping` (with the interval) for a client to tell a dead stream by."""
    server = start_server({"LIVEFEED_SSE_KEEPALIVE": "0.2"})
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, "tools=quiet")
        while not (message := await sse.next()).comment:
            pass
        assert message.event == "ping"
        assert message.json() == {"type": "ping", "interval": 0.2}
        await sse.response.aclose()


async def test_a_busy_stream_still_gets_a_comment_line_every_keepalive(
    start_server: StartServer,
):
    # "A comment line at least every 15 s" (CONTRACT.md) holds while events flow too:
    # a stream that only commented after a silence would never comment here.
    server = start_server({"LIVEFEED_SSE_KEEPALIVE": "0.5"})
    tool = unique_tool()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, f"tools={tool}")
        await live(sse)
        publishing = True

        async def publish_on() -> None:
            while publishing:  # paced well inside the outbox and publish-rate limits
                await publish_ok(server.url, story([tool]), http)
                await asyncio.sleep(0.02)

        publisher = asyncio.create_task(publish_on())
        seen: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                while seen.count("comment") < 2:
                    message = await sse.next()
                    seen.append("comment" if message.comment else message.event)
        finally:
            publishing = False
            await publisher
        first = seen.index("comment")
        assert "story" in seen[first + 1 : -1], seen  # events flowed between the comments
        await sse.response.aclose()


async def test_a_stalled_reader_closed_as_a_slow_consumer_is_cut_and_uncounted(
    start_server: StartServer,
):
    server = start_server()  # default limits: 1000 frames or 4 MiB unsent
    tool = unique_tool()
    stalled = await StalledReader.open(server.port, tool)
    assert b"connection: close" in stalled.head.lower()  # the socket never carries another request
    assert await presence_count(server.url, tool) == 1
    # The reader stops reading. ~10 MB of events: past the limits, so it is closed (4008);
    # its socket never drains, so only cutting it ends the response and the session.
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for batch in range(25):
            document = {"events": [story([tool], f"b{batch}", body="x" * 4000)] * 100}
            await publish_ok(server.url, document, http)
    metrics = await scrape(server)
    assert metrics[("livefeed_connections_closed_total", (("reason", "slow_consumer"),))] == 1

    async def uncounted() -> bool:
        return await presence_count(server.url, tool) == 0

    await async_wait_until(uncounted, what="the stalled reader to leave presence")
    # Cut, not closed in good order: reading on finds the end (reset or EOF) without the
    # server waiting for us.
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(stalled.reader.read(1 << 16), TIMEOUT):
            pass
    stalled.writer.close()


async def test_resuming_past_many_large_events_is_paced_not_cut_as_a_slow_consumer(
    server: ServerProcess,
):
    # 320 stories of ~15 KB (5000 three-byte characters): ~4.8 MB to replay, more than
    # the 4 MiB a connection may have unsent. A reader that keeps up must get them all;
    # were the replay queued whole before the stream could send any of it, the server
    # would close the stream as a slow consumer, and every reconnect with the same
    # Last-Event-ID would end the same way.
    tool = unique_tool()
    [first] = await publish_ok(server.url, story([tool], "seen"))
    big = story([tool], "large", body="漢" * 5000)
    ids: list[str] = []
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for _ in range(8):
            ids += [e["id"] for e in await publish_ok(server.url, {"events": [big] * 40}, http)]
        sse = await stream(http, server, f"tools={tool}", last_event_id=f"{tool}:{first['id']}")
        resumed = []
        while (message := await sse.next()).event != "position":
            assert message.event != "close", message.data
            if message.event == "story":
                resumed.append(message.json()["id"])
        assert resumed == ids
        await sse.response.aclose()


async def test_last_event_id_resumes_a_stream_of_more_than_100_tools_when_allowed(
    start_server: StartServer,
):
    # The subscription limit is configurable; a stream at a raised limit must still be
    # able to resume from its own cursor, which names every one of its tools.
    server = start_server({"LIVEFEED_MAX_SUBSCRIPTIONS": "150"})
    tools = [unique_tool() for _ in range(120)]
    query = f"tools={','.join(tools)}"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await stream(http, server, query)
        for _ in tools:
            await sse.wait_for("position")
        cursor = sse.last_event_id
        assert len(cursor.split(",")) == len(tools)
        await sse.response.aclose()
        [missed] = await publish_ok(server.url, story([tools[0]], "while away"))
        again = await stream(http, server, query, last_event_id=cursor)
        resumed, live = [], 0
        while live < len(tools):
            message = await again.next()
            live += message.event == "position"
            if message.event == "story":
                resumed.append(message.json()["id"])
        assert resumed == [missed["id"]]  # not lost: the cursor was honoured
        await again.response.aclose()
