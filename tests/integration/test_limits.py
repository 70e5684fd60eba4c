"""Slow consumers and the bounded outbox; /metrics counts what happened."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from pathlib import Path

import httpx
import orjson
import pytest

from livefeed.server import HEAD_TIMEOUT
from livefeed.transports.direct import ABORT_AFTER
from tests.conftest import StartServer
from tests.support.clients import (
    ROOMY_OUTBOX,
    WsClient,
    publish_ok,
    stalled_subscriber,
    story,
    unique_tool,
    wait_session_ended,
)
from tests.support.raw_ws import RawWebSocket, client_frame
from tests.support.server import ServerProcess, scrape
from tests.support.sse import StalledReader
from tests.support.timing import TIMEOUT, async_wait_until

# The most the kernel lets a socket's send buffer grow to.
SEND_BUFFER_MAX = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


async def test_a_consumer_that_stops_reading_is_closed_with_4008_and_slows_no_one(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_OUTBOX_FRAMES": "50"})
    tool = unique_tool()
    slow = await RawWebSocket.open(server.port, f"/ws?tools={tool}", receive_buffer=4096)
    fast = await WsClient.subscribed(server.ws_url, tool)
    # ~6 MB: more than the kernel's socket buffers hold, so the slow one backs up.
    body = "x" * 4000
    ids: list[str] = []
    reading = asyncio.create_task(fast.events(15 * 100, timeout=2 * TIMEOUT))
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for batch in range(15):
            document = {"events": [story([tool], f"b{batch}", body=body)] * 100}
            ids += [e["id"] for e in await publish_ok(server.url, document, http)]
    received = [e["id"] for e in await reading]

    assert received == ids  # the fast subscriber got everything while the slow one lagged
    assert await asyncio.wait_for(slow.close_code(), TIMEOUT) == 4008
    metrics = await scrape(server)
    assert metrics[("livefeed_connections_closed_total", (("reason", "slow_consumer"),))] == 1
    slow.abort()
    await fast.close()


async def test_a_consumer_that_lags_within_its_limits_gets_every_event_in_order(
    start_server: StartServer,
):
    server = start_server(
        {"LIVEFEED_OUTBOX_FRAMES": "100000", "LIVEFEED_OUTBOX_BYTES": str(64 * 2**20)}
    )
    tools = [unique_tool(), unique_tool()]
    lagging = await RawWebSocket.open(
        server.port, f"/ws?tools={','.join(tools)}", receive_buffer=4096
    )
    # It reads nothing while ~10 MB are published: more than twice what the kernel's
    # socket buffers can hold, so most of it waits in the server for the socket to
    # drain, and the writes switch between the direct path and the held one.
    body, batches = "x" * 4000, 25
    assert batches * 100 * len(body) > 2 * SEND_BUFFER_MAX
    published: dict[str, list[str]] = {tool: [] for tool in tools}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for batch in range(batches):
            tool = tools[batch % 2]
            document = {"events": [story([tool], f"b{batch}", body=body)] * 100}
            published[tool] += [e["id"] for e in await publish_ok(server.url, document, http)]

    received: dict[str, list[str]] = {tool: [] for tool in tools}
    while sum(map(len, received.values())) < batches * 100:
        opcode, payload = await asyncio.wait_for(lagging.read_frame(), TIMEOUT)
        assert opcode == 0x1, f"unexpected frame {opcode}: {payload[:80]!r}"
        frame = orjson.loads(payload)
        if frame["type"] == "event":
            received[frame["tool"]].append(frame["id"])
    assert received == published
    lagging.abort()


@pytest.mark.parametrize(
    ("frame", "opcode", "counted"),
    [
        pytest.param(b"x" * 5000, 0x1, "too_large", id="frame-too-large-1009"),
        pytest.param(b"\xff\xfe", 0x1, "1007", id="invalid-utf8-1007"),
        pytest.param(struct.pack("!H", 1000), 0x8, None, id="client-close"),
    ],
)
async def test_a_stalled_client_whose_connection_ends_is_cut_off(
    start_server: StartServer, frame: bytes, opcode: int, counted: str | None
):
    """A client with megabytes waiting for it (under the slow-consumer limits) that
    ends its connection while it reads nothing: its session ends, and its socket,
    which would never drain, is cut rather than kept with its backlog for ever."""
    server = start_server(ROOMY_OUTBOX)
    tool = unique_tool()
    async with stalled_subscriber(server, tool) as stalled:
        stalled.send(frame, opcode)
        await wait_session_ended(server.url, tool)
        assert not stalled.closed_by_server()  # ended at once, not by the cut below
        await async_wait_until(stalled.closed_by_server, ABORT_AFTER + TIMEOUT, "a closed socket")
    expected = {(("reason", counted),): 1} if counted else {}  # a client's close: none
    assert await closes_counted(server) == expected


async def closes_counted(server: ServerProcess) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value
        for (name, labels), value in (await scrape(server)).items()
        if name == "livefeed_connections_closed_total"
    }


async def test_a_close_is_counted_once_whatever_the_client_sends_after_it(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_FRAME_RATE": "0.1", "LIVEFEED_FRAME_BURST": "2"})
    client = await RawWebSocket.open(server.port)
    for _ in range(4):  # 2 pass, then 2 dropped: closed
        client.send({"type": "ping"})
    assert await client.close_code() == 4029
    client.send(b"x" * 5000)  # too large: an error of the parser, after the server's close
    # The parser's error closes the socket at once, well before the server would cut it.
    await async_wait_until(client.closed_by_server, ABORT_AFTER / 2, "the socket closed")
    assert await closes_counted(server) == {(("reason", "too_many_requests"),): 1}
    client.abort()


async def test_metrics_count_connections_events_and_deliveries(server: ServerProcess):
    tool = unique_tool()
    before = await scrape(server)
    clients = [await WsClient.open(server.ws_url, tools=tool) for _ in range(2)]
    for client in clients:
        await client.welcome()
        await client.expect("subscribed")
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        request = http.build_request("GET", f"{server.url}/sse?tools={tool}")
        sse = await http.send(request, stream=True)
        lines = sse.aiter_lines()
        while "subscribed" not in await anext(lines):
            pass
        await publish_ok(
            server.url,
            {
                "events": [
                    story([tool]),
                    story([tool]),
                    {
                        "kind": "activity",
                        "data": {"actor": {"handle": "a"}, "verb": "starred", "tool": tool},
                    },
                ]
            },
        )
        for client in clients:
            await client.events(3)
        after = await scrape(server)
        await sse.aclose()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("livefeed_connections", transport="websocket") == 2
    assert delta("livefeed_connections", transport="sse") == 1
    assert delta("livefeed_subscriptions", transport="websocket") == 2
    assert delta("livefeed_subscriptions", transport="sse") == 1
    assert delta("livefeed_events_published_total", kind="story") == 2
    assert delta("livefeed_events_published_total", kind="activity") == 1
    assert delta("livefeed_publish_requests_total", status="202") == 1
    assert delta("livefeed_deliveries_total") >= 9  # 3 events x 3 subscribers
    assert delta("livefeed_publish_to_delivery_seconds_count") >= 3
    assert after[("livefeed_broker_up", ())] == 1
    assert ("process_resident_memory_bytes", ()) in after
    for client in clients:
        await client.close()


async def test_an_sse_consumer_that_stops_reading_is_cut_off_too(start_server: StartServer):
    server = start_server({"LIVEFEED_OUTBOX_FRAMES": "50"})
    tool = unique_tool()
    stalled = await StalledReader.open(server.port, tool)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        for batch in range(15):
            document = {"events": [story([tool], f"b{batch}", body="x" * 4000)] * 100}
            await publish_ok(server.url, document, http)
    # Reading now, the stream ends (the last chunk of a chunked body) well short of
    # the ~6 MB published.
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = await asyncio.wait_for(stalled.reader.read(65536), TIMEOUT)
        assert chunk, "the connection closed without ending the stream"
        received += chunk
    assert len(received) < 5_000_000
    metrics = await scrape(server)
    assert metrics[("livefeed_connections_closed_total", (("reason", "slow_consumer"),))] == 1
    stalled.writer.close()


async def test_a_client_that_sends_pings_and_reads_nothing_is_closed_with_4008(
    start_server: StartServer,
):
    """Pongs pile up unsent like any frame: a client that floods pings and never reads
    the answers must not make the server hold them without bound (100 MB of pings had
    the server hold ~95 MB for one connection, and never close it)."""
    limit = 2**20
    server = start_server({"LIVEFEED_OUTBOX_BYTES": str(limit)})
    client = await RawWebSocket.open(server.port, receive_buffer=4096)
    ping = client_frame(b"p" * 125, 0x9)  # answered by a pong of the same payload
    # Enough pings that their pongs fill both sockets' buffers and then the limit twice.
    flood = ping * ((2 * SEND_BUFFER_MAX + 2 * limit) // len(ping) + 1)
    client.writer.write(flood)
    await asyncio.wait_for(client.writer.drain(), TIMEOUT)
    # Reading now: the pongs that were written, then the close frame.
    assert await asyncio.wait_for(client.close_code(), TIMEOUT) == 4008
    metrics = await scrape(server)
    assert metrics[("livefeed_connections_closed_total", (("reason", "slow_consumer"),))] == 1
    client.abort()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            received += chunk
    return received


async def test_a_request_head_that_never_ends_is_refused(start_server: StartServer):
    """uvicorn keeps every header it is sent: a handshake whose headers never end held
    its connection, and the memory, for ever (50 MB of headers took ~57 MB)."""
    server = start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
    padding = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    with contextlib.suppress(ConnectionError):
        for _ in range(100):  # 1 MB, sixteen times the limit
            writer.write(padding * 10)
            await asyncio.wait_for(writer.drain(), TIMEOUT)
    received = await read_until_closed(reader, TIMEOUT)
    assert received == b"" or received.startswith(b"HTTP/1.1 400"), received[:200]
    writer.close()


async def test_a_request_head_of_many_empty_headers_is_refused(server: ServerProcess):
    """Each header costs uvicorn a tuple whatever its size: the head bound counted only
    names and values, so 64 KiB of empty headers ("a:\\r\\n", 256 KiB on the wire) was
    let through and held ~4 MB per connection. A usual head is still served."""

    async def get(head: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(writer.drain(), TIMEOUT)
        received = await read_until_closed(reader, TIMEOUT)
        writer.close()
        return received

    usual = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 100) for i in range(40))
    assert (await get(usual)).startswith(b"HTTP/1.1 200")
    # Refused: a 400, or nothing. The server closes with the rest of the head still
    # arriving, and closing a socket with unread input is a reset, which can reach the
    # client before it has read the 400 (and then the kernel drops it). Served, or held
    # open, would fail here (read_until_closed times out on a connection left open).
    refused = await get(b"a:\r\n" * 20_000)
    assert refused == b"" or refused.startswith(b"HTTP/1.1 400"), refused[:200]


async def test_a_request_head_that_never_arrives_in_full_is_cut_and_others_stay(
    start_server: StartServer,
):
    """A socket with half a handshake (a request line, no end of headers) was held for
    ever; a WebSocket open for longer than that is not affected."""
    server = start_server()
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    assert await read_until_closed(reader, HEAD_TIMEOUT + TIMEOUT) == b""
    assert time.monotonic() - started >= HEAD_TIMEOUT - 0.5
    writer.close()
    await client.send({"type": "ping", "ref": "still-open"})
    assert (await client.expect("pong"))["ref"] == "still-open"
    await client.close()


async def test_a_ping_and_a_close_in_one_read_get_the_pong_and_the_echo_of_the_close(
    server: ServerProcess,
):
    """A ping followed by a close in the same segment: the close's echo is queued with the
    pong, and must be sent with it (dropped, the client saw no close frame: 1006)."""
    client = await RawWebSocket.open(server.port)
    assert (await asyncio.wait_for(client.read_frame(), TIMEOUT))[0] == 0x1  # welcome
    client.writer.write(
        client_frame(b"hi", 0x9) + client_frame(struct.pack("!H", 1000) + b"bye", 0x8)
    )
    assert await asyncio.wait_for(client.read_frame(), TIMEOUT) == (0xA, b"hi")
    assert await asyncio.wait_for(client.read_frame(), TIMEOUT) == (0x8, b"\x03\xe8bye")
    client.abort()
