"""A TCP relay in front of a real redis-server that can lose or hold back what passes
through it, as a network, a dying peer or a busy process would. Every connection is
passed on as is, except what the test asks for:

- commands, picked by a marker their bytes contain (the publish script's SHA1, say),
  so that other connections (the live link, history reads) pass untouched: the reply
  to one can be lost (:meth:`Relay.lose_reply_to`), or the command itself withheld
  until the test lets it through (:meth:`Relay.hold_request`);
- the live link (the connection whose client sent ``SUBSCRIBE``): what Redis sends on
  it can be held back (:meth:`Relay.hold_link`), and the link cut
  (:meth:`Relay.drop_link`);
- Redis's answers on every other connection (:meth:`Relay.hold_answers`).

So history can be made to run ahead of the live events, or a read to be in flight when
the link drops, at a point the test chooses, without timing. The relay runs on the
test's event loop, so whatever talks through it synchronously must run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

_SUBSCRIBE = b"\r\nSUBSCRIBE\r\n"


@dataclass(eq=False)
class _Pair:
    """A client's connection to the relay and the relay's own to Redis."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    losing_reply: bool = False  # what Redis sends back is dropped
    held_request: bytearray | None = None  # the command (and what followed), withheld
    released: bool = False
    subscribed: bool = False  # a live link, current or past


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.reply_lost = asyncio.Event()  # Redis answered the marked command; it was dropped
        self.request_held = asyncio.Event()
        self.late_reply = asyncio.Event()  # Redis answered a released command
        self.late_replies: list[bytes] = []
        self.link_held = bytearray()  # what Redis sent on the live link, not yet passed on
        self.held_answers: list[tuple[asyncio.StreamWriter, bytes]] = []  # to commands
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reply_marker: bytes | None = None
        self._request_marker: bytes | None = None
        self._link: _Pair | None = None  # the live link, until the test cuts it
        self._holding_link = False
        self._holding_answers = False

    @classmethod
    async def open(cls, target_port: int) -> Relay:
        relay = cls(target_port)
        relay._server = await asyncio.start_server(relay._accept, "127.0.0.1", 0)
        relay.port = relay._server.sockets[0].getsockname()[1]
        return relay

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    # Commands, picked by a marker.

    def lose_reply_to(self, marker: bytes) -> None:
        """Drop everything Redis sends back on the next connection that sends ``marker``,
        from that command on."""
        self._reply_marker = marker

    def hold_request(self, marker: bytes) -> None:
        """Withhold the next command containing ``marker`` (and what follows on its
        connection) from Redis until :meth:`release_requests`, even if the client hangs
        up."""
        self._request_marker = marker

    async def release_requests(self) -> None:
        """Let every withheld command reach Redis; its answer lands in ``late_replies``."""
        for pair in list(self._pairs):
            if pair.held_request is not None and not pair.released:
                pair.released = True
                pair.server.write(bytes(pair.held_request))
                with contextlib.suppress(ConnectionError):
                    await pair.server.drain()

    # The live link.

    def hold_link(self) -> None:
        """Keep what Redis sends on the live link in ``link_held`` from now on, until
        :meth:`release_link`."""
        self._holding_link = True

    def release_link(self, upto: int | None = None) -> None:
        """Pass on the first ``upto`` bytes held from the live link and keep holding what
        follows; without ``upto``, pass on everything and stop holding."""
        assert self._link is not None, "no live link came through the relay"
        if upto is None:
            upto, self._holding_link = len(self.link_held), False
        self._link.client.write(bytes(self.link_held[:upto]))
        del self.link_held[:upto]

    def drop_link(self) -> None:
        """Cut the live link, as a network failure would; what it held is lost."""
        assert self._link is not None, "no live link came through the relay"
        self._link.client.transport.abort()
        self._link = None
        self.link_held.clear()

    # Answers on the other connections.

    def hold_answers(self) -> None:
        """Keep Redis's answers on every connection but the live link in
        ``held_answers`` from now on, until :meth:`release_answers`."""
        self._holding_answers = True

    def release_answers(self) -> None:
        """Pass on the held answers and stop holding."""
        self._holding_answers = False
        for client, data in self.held_answers:
            client.write(data)
        self.held_answers.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pair in self._pairs:
            for writer in (pair.client, pair.server):
                writer.close()
                with contextlib.suppress(OSError):
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
        """Client to Redis: withholds a marked command, notes the live link."""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if _SUBSCRIBE in chunk:
                    pair.subscribed = True
                    self._link = pair  # before Redis can answer it
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
                    pair.losing_reply = True
                pair.server.write(chunk)
                await pair.server.drain()
        if pair.held_request is None:
            pair.server.close()
        # else: keep Redis's side open for release_requests(), until Redis answers

    async def _downstream(self, reader: asyncio.StreamReader, pair: _Pair) -> None:
        """Redis to client, unless lost or held."""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if pair.released:
                    self.late_replies.append(chunk)
                    self.late_reply.set()
                    pair.server.close()
                    break
                if pair.losing_reply:
                    self.reply_lost.set()
                    continue
                if pair.subscribed:
                    if pair is not self._link:
                        continue  # a link the test cut
                    if self._holding_link:
                        self.link_held += chunk
                        continue
                elif self._holding_answers:
                    self.held_answers.append((pair.client, chunk))
                    continue
                with contextlib.suppress(ConnectionError):
                    pair.client.write(chunk)
                    await pair.client.drain()
        pair.client.close()
