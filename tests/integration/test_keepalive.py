"""The server's WebSocket keepalive (contract: a ping every `heartbeat` seconds, and a
connection that has not answered within two intervals is dropped), seen by a client
that decides for itself whether to answer: websockets' sans-I/O protocol over a
plain socket, so nothing answers a ping behind the test's back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from livefeed.transports.direct import ABORT_AFTER
from tests.conftest import StartServer
from tests.support.clients import (
    ROOMY_OUTBOX,
    presence_count,
    publish_backlog,
    publish_ok,
    story,
    unique_tool,
)
from tests.support.raw_ws import RawWebSocket
from tests.support.server import scrape
from tests.support.timing import TIMEOUT, async_wait_until

HEARTBEAT = 0.5
JITTER = 0.2  # how late the server's timer may run on a loaded machine


class RawClient:
    def __init__(self, ws_url: str) -> None:
        self.uri = parse_uri(ws_url)
        self.protocol = ClientProtocol(self.uri)
        self.pings: list[float] = []  # when each ping arrived (monotonic)
        self.texts: list[dict[str, object]] = []
        self.answer_pings = True

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.uri.host, self.uri.port)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _flush(self) -> None:
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def send_text(self, frame: dict[str, object]) -> None:
        self.protocol.send_text(orjson.dumps(frame))
        self._flush()

    async def read(self, until: Callable[[], bool], timeout: float) -> int | None:
        """Read frames until ``until()`` holds or the server closes: the close code, or
        None. Fails if neither happens within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until():
            data = await asyncio.wait_for(self.reader.read(65536), deadline - time.monotonic())
            self.protocol.receive_data(data) if data else self.protocol.receive_eof()
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    if event.opcode is Opcode.PING:
                        self.pings.append(time.monotonic())
                    elif event.opcode is Opcode.TEXT:
                        self.texts.append(orjson.loads(event.data))
                    elif event.opcode is Opcode.CLOSE:
                        assert self.protocol.close_rcvd is not None
                        return self.protocol.close_rcvd.code
            # The protocol queues a pong for every ping; it reaches the server only if
            # this client answers.
            pending = self.protocol.data_to_send()
            if self.answer_pings:
                self.writer.write(b"".join(pending))
            if not data:
                raise AssertionError("the server cut the connection without a close frame")
        return None

    def close(self) -> None:
        self.writer.close()


async def test_a_client_that_never_answers_is_dropped_after_two_heartbeats(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_HEARTBEAT": str(HEARTBEAT)})
    client = RawClient(server.ws_url)
    client.answer_pings = False
    await client.open()
    code = await client.read(lambda: False, 4 * HEARTBEAT + TIMEOUT)
    closed_at = time.monotonic()
    client.close()
    assert code == 1011
    metrics = await scrape(server)
    assert metrics[("livefeed_connections_closed_total", (("reason", "internal_error"),))] == 1
    # One ping, then nothing more until the drop, which waited the two intervals.
    assert len(client.pings) == 1
    assert closed_at - client.pings[0] >= 2 * HEARTBEAT - JITTER


async def test_a_client_that_answers_is_pinged_every_heartbeat_and_stays(
    start_server: StartServer,
):
    server = start_server({"LIVEFEED_HEARTBEAT": str(HEARTBEAT)})
    tool = unique_tool()
    client = RawClient(server.ws_url)
    await client.open()
    assert await client.read(lambda: bool(client.texts), TIMEOUT) is None  # the welcome
    await client.send_text({"type": "subscribe", "tools": [tool], "ref": "1"})
    # Five pings answered: four intervals, twice what an unanswered ping is given.
    code = await client.read(lambda: len(client.pings) >= 5, 5 * HEARTBEAT + TIMEOUT)
    assert code is None
    gaps = [b - a for a, b in zip(client.pings, client.pings[1:], strict=False)]
    assert all(gap >= HEARTBEAT - JITTER for gap in gaps), gaps
    # Still subscribed and live.
    await publish_ok(server.url, story([tool], "Still here"))
    code = await client.read(lambda: any(f["type"] == "event" for f in client.texts), TIMEOUT)
    assert code is None
    assert [frame["type"] for frame in client.texts] == ["welcome", "subscribed", "event"]
    client.close()


async def test_a_client_that_stopped_reading_is_dropped_and_cut_off(start_server: StartServer):
    """A frozen tab: it reads nothing, so megabytes wait in the server for its socket,
    under the slow-consumer limits. The keepalive drop must end its session (presence,
    subscriptions) at once and cut the socket, which would never drain, soon after."""
    heartbeat = 1.0  # long enough for the pongs below to keep it alive while it backs up
    server = start_server({"LIVEFEED_HEARTBEAT": str(heartbeat), **ROOMY_OUTBOX})
    tool = unique_tool()
    stalled = await RawWebSocket.open(server.port, f"/ws?tools={tool}", receive_buffer=4096)
    try:
        await asyncio.wait_for(stalled.reader.readuntil(b'"subscribed"'), TIMEOUT)
        # Alive (any pong answers the server's pings) while the backlog builds; then silent.
        await publish_backlog(server.url, tool, between=stalled.send_pong)
        assert await presence_count(server.url, tool) == 1

        async def session_ended() -> bool:
            return await presence_count(server.url, tool) == 0

        await async_wait_until(session_ended, 3 * heartbeat + TIMEOUT, "the session to end")
        assert not stalled.closed_by_server()  # ended by the drop, not by the cut below
        await async_wait_until(stalled.closed_by_server, ABORT_AFTER + TIMEOUT, "a closed socket")
    finally:
        stalled.abort()
