"""A TCP relay in front of a real redis-server that can lose what passes through it,
as a network or a dying peer would: the reply to one command, or the command itself
until the test lets it through. It runs on the test's event loop, so whatever talks
through it synchronously must run in a thread.

A command is picked by a marker its bytes contain (the publish script's SHA1, say),
so that other connections (the live link, history reads) pass untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    holding_reply: bool = False
    held_request: bytearray | None = None  # the command (and what followed), withheld
    released: bool = False


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.reply_lost = asyncio.Event()  # Redis answered the marked command; it was dropped
        self.request_held = asyncio.Event()
        self.late_reply = asyncio.Event()  # Redis answered a released command
        self.late_replies: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reply_marker: bytes | None = None
        self._request_marker: bytes | None = None

    @classmethod
    async def open(cls, target_port: int) -> Relay:
        relay = cls(target_port)
        relay._server = await asyncio.start_server(relay._accept, "127.0.0.1", 0)
        relay.port = relay._server.sockets[0].getsockname()[1]
        return relay

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply_to(self, marker: bytes) -> None:
        """Drop everything Redis sends back on the next connection that sends ``marker``,
        from that command on."""
        self._reply_marker = marker

    def hold_request(self, marker: bytes) -> None:
        """Withhold the next command containing ``marker`` (and what follows on its
        connection) from Redis until :meth:`release`, even if the client hangs up."""
        self._request_marker = marker

    async def release(self) -> None:
        """Let every withheld command reach Redis; its answer lands in ``late_replies``."""
        for pair in list(self._pairs):
            if pair.held_request is not None and not pair.released:
                pair.released = True
                pair.server.write(bytes(pair.held_request))
                with contextlib.suppress(ConnectionError):
                    await pair.server.drain()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pair in self._pairs:
            for writer in (pair.client, pair.server):
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        try:
            server_in, server = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # Redis is down: the client sees the connection closed
            client.close()
            return
        pair = _Pair(client, server)
        self._pairs.add(pair)
        for pump in (self._upstream(client_in, pair), self._downstream(server_in, pair)):
            task = asyncio.create_task(pump)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _upstream(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if (
                    pair.held_request is None
                    and self._request_marker is not None
                    and self._request_marker in chunk
                ):
                    self._request_marker = None
                    pair.held_request = bytearray()
                    self.request_held.set()
                if pair.held_request is not None and not pair.released:
                    pair.held_request += chunk
                    continue
                if self._reply_marker is not None and self._reply_marker in chunk:
                    self._reply_marker = None
                    pair.holding_reply = True
                pair.server.write(chunk)
                await pair.server.drain()
        if pair.held_request is None:
            pair.server.close()
        # else: keep Redis's side open for release(), until Redis answers the command

    async def _downstream(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if pair.released:
                    self.late_replies.append(chunk)
                    self.late_reply.set()
                    pair.server.close()
                    break
                if pair.holding_reply:
                    self.reply_lost.set()
                    continue
                with contextlib.suppress(ConnectionError):
                    pair.client.write(chunk)
                    await pair.client.drain()
        pair.client.close()
