"""A client that closes its WebSocket itself leaves nothing behind on the server."""

from __future__ import annotations

import httpx

from tests.conftest import StartServer
from tests.support.clients import WsClient, unique_tool
from tests.support.timing import TIMEOUT, async_wait_until


async def test_a_client_close_is_clean_and_does_not_hold_up_shutdown(start_server: StartServer):
    server = start_server()
    tool = unique_tool()
    client = await WsClient.open(server.ws_url, tools=tool)
    await client.welcome()
    await client.expect("subscribed")
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
