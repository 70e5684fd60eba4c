"""The hub sends on a duplicate of each plain WebSocket's descriptor (raw sends, see
livefeed/transports/direct.py): the duplicate lives exactly as long as its connection,
however that ends. Ordering and the 4008 limit under backed-up sockets are in
test_limits.py (a lagging consumer gets every event in order; a stalled one is closed)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections import Counter

import pytest
import websockets

from livefeed.config import Settings
from livefeed.transports import direct
from tests.conftest import StartServer
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.ports import free_port
from tests.support.server import PUBLISH_KEY, ServerProcess, scrape, serve_in_process
from tests.support.timing import TIMEOUT, async_wait_until

_LISTEN = "0A"  # /proc/net/tcp state


def descriptors_per_connection(server: ServerProcess) -> Counter[int]:
    """For each connection the server accepted (keyed by the client's port): how many of
    the server's descriptors refer to its socket."""
    assert server.process is not None
    return descriptors_of(server.process.pid, server.port)


def descriptors_of(pid: int, port: int) -> Counter[int]:
    """As :func:`descriptors_per_connection`, for process ``pid`` listening on ``port``."""
    inode_to_client: dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state != _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    inode_to_client[inode] = int(remote.rsplit(":", 1)[1], 16)
    counts: Counter[int] = Counter()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except FileNotFoundError:  # closed while listing
            continue
        if target.startswith("socket:["):
            client = inode_to_client.get(target[8:-1])
            if client is not None:
                counts[client] += 1
    return counts


def client_port(client: WsClient) -> int:
    port: int = client.connection.transport.get_extra_info("sockname")[1]
    return port


async def test_each_connections_duplicate_descriptor_ends_with_it_however_it_ends(
    start_server: StartServer,
):
    server = start_server()
    tool = unique_tool()
    clients = [await WsClient.open(server.ws_url, tools=tool) for _ in range(4)]
    for client in clients:
        await client.welcome()
        await client.expect("subscribed")
    await publish_ok(server.url, story([tool], "first"))
    for client in clients:
        assert (await client.events(1))[0]["data"]["title"] == "first"
    ports = [client_port(client) for client in clients]
    # Two descriptors each: the transport's and the one the hub sends on.
    assert {port: descriptors_per_connection(server)[port] for port in ports} == dict.fromkeys(
        ports, 2
    )

    clean, aborted, reset, staying = clients
    await clean.close()  # the closing handshake
    aborted.connection.transport.abort()  # a FIN with no close frame
    # A reset (RST): the server's next send on it fails, or its read sees it first.
    raw = reset.connection.transport.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset.connection.transport.abort()
    await publish_ok(server.url, story([tool], "second"))
    assert (await staying.events(1))[0]["data"]["title"] == "second"

    def only_staying_left() -> bool:
        held = descriptors_per_connection(server)
        return all(held[port] == 0 for port in ports[:3])

    await async_wait_until(only_staying_left, what="the ended connections' descriptors")
    assert descriptors_per_connection(server)[ports[3]] == 2
    await staying.close()
    await async_wait_until(
        lambda: descriptors_per_connection(server)[ports[3]] == 0,
        what="the last connection's descriptors",
    )


async def test_a_server_closing_a_connection_closes_its_duplicate_too(start_server: StartServer):
    server = start_server({"LIVEFEED_MAX_SUBSCRIPTIONS": "1"})
    client = await WsClient.subscribed(server.ws_url, unique_tool())
    port = client_port(client)
    assert descriptors_per_connection(server)[port] == 2
    await client.send("x" * 5000)  # over the frame limit: the server closes with 1009
    assert await client.closed_with() == 1009
    await async_wait_until(
        lambda: descriptors_per_connection(server)[port] == 0, what="the descriptors to go"
    )
    await asyncio.wait_for(client.close(), TIMEOUT)


async def test_past_the_descriptor_ceiling_a_connection_sends_through_its_transport(
    monkeypatch: pytest.MonkeyPatch,
):
    # As if the process had used half its descriptor limit: no duplicate is made, and
    # the connection is served all the same, on one descriptor.
    monkeypatch.setattr(direct, "RAW_DESCRIPTOR_CEILING", 0)
    settings = Settings(port=free_port(), publish_keys=(PUBLISH_KEY,), log_level="warning")
    async with serve_in_process(settings) as address:
        tool = unique_tool()
        client = await WsClient.subscribed(f"ws://{address}/ws", tool)
        await publish_ok(f"http://{address}", story([tool], "through the transport"))
        assert (await client.events(1))[0]["data"]["title"] == "through the transport"
        assert descriptors_of(os.getpid(), settings.port)[client_port(client)] == 1
        await client.close()


def open_file_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) from /proc/<pid>/limits."""
    with open(f"/proc/{pid}/limits") as lines:
        for line in lines:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


async def test_serve_raises_a_low_open_file_limit_to_the_hard_limit(start_server: StartServer):
    # Under a soft limit of 256 the server could hold about 180 connections (two
    # descriptors each below half the limit, one above); raised to the hard limit, it
    # holds 300 with a duplicate each, and all of them get the event.
    server = start_server(open_files=(256, 4096))
    assert server.process is not None
    assert open_file_limit(server.process.pid) == (4096, 4096)
    assert "open-file limit raised from 256 to 4096" in server.log()
    tool = unique_tool()
    clients = [await WsClient.subscribed(server.ws_url, tool) for _ in range(300)]
    await publish_ok(server.url, story([tool], "to three hundred"))
    for client in clients:
        assert (await client.events(1))[0]["data"]["title"] == "to three hundred"
    ports = {client_port(client) for client in clients}
    per_connection = descriptors_per_connection(server)
    assert {per_connection[port] for port in ports} == {2}
    # What an operator watches (docs/operations.md): descriptors in use against the limit.
    samples = await scrape(server)
    assert samples[("process_max_fds", ())] == 4096
    assert samples[("process_open_fds", ())] >= 600
    await asyncio.gather(*(client.close() for client in clients))


async def test_at_the_open_file_limit_a_connection_is_refused_and_the_server_carries_on(
    start_server: StartServer,
):
    # The event loop (libuv) accepts and at once closes a connection it has no
    # descriptor for: the client is refused promptly, not left hanging, and the
    # listener stays open, so connections are taken again once descriptors free up.
    server = start_server(open_files=(64, 64))
    tool = unique_tool()
    clients: list[WsClient] = []
    refused = None
    for _ in range(64):  # more than 64 descriptors' worth
        try:
            client = await WsClient.open(server.ws_url, tools=tool)
        except (OSError, websockets.exceptions.InvalidMessage) as error:
            refused = error
            break
        await client.welcome()
        await client.expect("subscribed")
        clients.append(client)
    assert refused is not None and clients, "the limit was never reached"
    assert not isinstance(refused, TimeoutError), "refused by hanging, not at once"
    leaving = {client_port(client) for client in clients[:5]}
    for client in clients[:5]:
        await client.close()
    await async_wait_until(
        lambda: not set(descriptors_per_connection(server)) & leaving,
        what="the server to let go of the closed connections",
    )
    late = await WsClient.subscribed(server.ws_url, tool)
    await publish_ok(server.url, story([tool], "after the limit"))
    for client in [*clients[5:], late]:
        assert (await client.events(1))[0]["data"]["title"] == "after the limit"
    await asyncio.gather(*(client.close() for client in [*clients[5:], late]))
