"""A client that closes its WebSocket itself leaves nothing behind on the server."""

from __future__ import annotations

import struct

import httpx

from tests.conftest import StartServer
from tests.support.clients import (
    ROOMY_OUTBOX,
    WsClient,
    stalled_subscriber,
    unique_tool,
    wait_session_ended,
)
from tests.support.timing import TIMEOUT, async_wait_until


async def test_a_client_close_is_clean_and_does_not_hold_up_shutdown(start_server: StartServer):
    server = start_server()
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    await client.close()  # the client starts the closing handshake

    async def gone() -> bool:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            body = (await http.get(f"{server.url}/api/tools/{tool}/presence")).json()
        return body["count"] == 0

    await async_wait_until(gone, what="the server to end the session")
    server.terminate()  # SIGTERM, and wait for the exit
    log = server.log()
    assert "Exception in ASGI application" not in log, log
    # The session was discarded: shutdown has no connection left to wait for.
    assert "did not close in time" not in log, log


async def test_a_shutdown_while_a_client_close_is_still_draining_is_clean(
    start_server: StartServer,
):
    """A client that closes while megabytes still wait for it keeps its socket open
    until it drains (or is cut). Shutdown must not try to send that connection a close
    frame of its own: after the client's close that raises, and ends the shutdown."""
    server = start_server(ROOMY_OUTBOX)
    tool = unique_tool()
    async with stalled_subscriber(server, tool) as stalled:
        stalled.send(struct.pack("!H", 1000), opcode=0x8)
        await wait_session_ended(server.url, tool)
        assert not stalled.closed_by_server()  # still draining, within its grace
        server.terminate()
    log = server.log()
    assert "Traceback" not in log, log
