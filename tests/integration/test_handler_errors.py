"""A bug in one connection's handler closes that connection with 1011, is logged, and
harms nothing else. The server runs in this process so a fault can be planted in it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from livefeed.config import Settings
from livefeed.session import Session
from tests.support.clients import WsClient, publish_ok, story
from tests.support.ports import free_port
from tests.support.server import PUBLISH_KEY, serve_in_process
from tests.support.timing import TIMEOUT


@pytest.fixture
async def in_process_server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    original = Session.handle_frame

    async def faulty(self: Session, text: str) -> None:
        if text == "plant a bug":
            raise RuntimeError("a planted bug")
        await original(self, text)

    monkeypatch.setattr(Session, "handle_frame", faulty)
    settings = Settings(port=free_port(), publish_keys=(PUBLISH_KEY,), log_level="warning")
    async with serve_in_process(settings) as address:
        yield address


async def test_a_handler_error_closes_only_that_connection_with_1011(
    in_process_server: str, caplog: pytest.LogCaptureFixture
):
    base = f"http://{in_process_server}"
    victim = await WsClient.open(f"ws://{in_process_server}/ws", tools="flask")
    bystander = await WsClient.open(f"ws://{in_process_server}/ws", tools="flask")
    for client in (victim, bystander):
        await client.welcome()
        await client.expect("subscribed")
    with caplog.at_level(logging.ERROR, logger="livefeed.ws"):
        await victim.send("plant a bug")
        assert await victim.closed_with() == 1011
    assert any("closing it with 1011" in r.getMessage() for r in caplog.records)
    [event] = await publish_ok(base, story(["flask"], "still here"))
    assert (await bystander.events(1))[0]["id"] == event["id"]
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        assert (await http.get(f"{base}/healthz")).status_code == 200
    await bystander.close()
