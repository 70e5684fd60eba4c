"""A bare WebSocket client on a raw socket, for tests that need to misbehave: stop
reading (a slow consumer), or send frames no library would."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from pathlib import Path

import orjson

from tests.support.timing import TIMEOUT

TCP_ESTABLISHED = "01"  # a socket's state in /proc/net/tcp


def client_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A masked client frame (clients must mask, RFC 6455 5.3)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(
        cls, port: int, path: str = "/ws", receive_buffer: int | None = None
    ) -> RawWebSocket:
        sock = socket.socket()
        if receive_buffer is not None:  # a small window makes the server back up sooner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return await cls.upgrade(reader, writer, port, path)

    @classmethod
    async def upgrade(
        cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, path: str
    ) -> RawWebSocket:
        """Hand-shake on a connection already open (a kept-alive one, say)."""
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert status.startswith(b"HTTP/1.1 101"), status
        return cls(reader, writer)

    def send(self, frame: dict[str, object] | bytes, opcode: int = 0x1) -> None:
        payload = frame if isinstance(frame, bytes) else orjson.dumps(frame)
        self.writer.write(client_frame(payload, opcode))

    async def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (servers never mask)."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(length)

    async def close_code(self) -> int:
        """Read frames until the close frame; its code."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])

    def send_pong(self) -> None:
        """An unsolicited pong: the server takes any pong as a sign of life."""
        self.writer.write(client_frame(b"", 0xA))

    def closed_by_server(self) -> bool:
        """Whether the server has closed its socket of this connection: in the kernel's
        TCP table its end is gone or has left ESTABLISHED (a socket closed with data
        unsent stays in FIN-WAIT-1, its FIN behind that data). Nothing is read, so a
        stalled client stays stalled."""
        client_port = self.writer.get_extra_info("sockname")[1]
        server_port = self.writer.get_extra_info("peername")[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (
                server_port,
                client_port,
            ):
                return state != TCP_ESTABLISHED
        return True

    def abort(self) -> None:
        self.writer.transport.abort()
        self.writer.close()
