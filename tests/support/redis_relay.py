"""A TCP relay in front of a redis-server that can hold back what Redis sends on the
live link, as when a busy process reads its pub/sub connection late.

Every connection through the relay is passed on as is, except what the test holds
back: what Redis sends on the pub/sub connection (the one whose client sent
``SUBSCRIBE``), kept in :attr:`LinkRelay.held` from :meth:`hold_link` until released,
or its answers to commands, from :meth:`hold_commands`. So history can be made to run
ahead of the live events, or a read to be in flight when the link drops, at a point
the test chooses, without timing.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.redis_server import RedisServer


class LinkRelay:
    def __init__(self, redis: RedisServer) -> None:
        self._target = redis.port
        self.port = 0
        self.held = bytearray()  # what Redis sent on the live link, not yet passed on
        self._holding = False
        self.held_answers: list[tuple[asyncio.StreamWriter, bytes]] = []  # to commands
        self._holding_answers = False
        self._link: asyncio.StreamWriter | None = None
        self._links: set[asyncio.StreamWriter] = set()  # every connection that subscribed
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def hold_link(self) -> None:
        self._holding = True

    def drop_link(self) -> None:
        """Cut the live link, as a network failure would."""
        assert self._link is not None, "no live link came through the relay"
        self._link.transport.abort()
        self._link = None
        self.held.clear()

    def hold_commands(self) -> None:
        self._holding_answers = True

    def release_commands(self) -> None:
        self._holding_answers = False
        for client, data in self.held_answers:
            client.write(data)
        self.held_answers.clear()

    def release(self, upto: int | None = None) -> None:
        """Pass on the first ``upto`` held bytes and keep holding what follows; without
        ``upto``, pass on everything and stop holding."""
        assert self._link is not None, "no live link came through the relay"
        if upto is None:
            upto, self._holding = len(self.held), False
        self._link.write(bytes(self.held[:upto]))
        del self.held[:upto]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pump in self._pumps:
            pump.cancel()
        for writer in self._writers:
            writer.close()
        for writer in self._writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        self._writers.append(client)
        try:
            redis_in, redis = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            client.close()
            return
        self._writers.append(redis)
        for pump in (self._up(client_in, redis, client), self._down(redis_in, client)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _up(
        self,
        source: asyncio.StreamReader,
        redis: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Client to Redis; notes which connection is the live link."""
        while data := await source.read(65536):
            if b"\r\nSUBSCRIBE\r\n" in data:
                self._link = client  # before Redis can answer it
                self._links.add(client)
            redis.write(data)
        redis.close()

    async def _down(self, source: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        """Redis to client, unless held."""
        while data := await source.read(65536):
            if client in self._links:
                if client is not self._link:
                    continue  # a link the test cut
                if self._holding:
                    self.held += data
                    continue
            elif self._holding_answers:
                self.held_answers.append((client, data))
                continue
            client.write(data)
        client.close()
