"""The publisher process: publishes the benchmark event through one peer's own path.

Run as ``python -m benchmarks.publisher --backend KIND --url URL --tools ...`` under the
peer's interpreter, pinned to the load core. It reads one JSON command per line on
stdin and answers one JSON line on stdout:

- ``{"op": "publish", "rate": R, "duration": T, "seed": 1}``: R events/s for T s, each to
  a random tool of the list (the only tool when there is one). Answer: ``sent``,
  ``per_tool`` (counts in list order), ``elapsed``, ``max_lag`` (s behind schedule), ``cpu``.
- ``{"op": "sync"}``: one event to every tool (the runner's readiness barrier).
- ``{"op": "quit"}``.

Only the standard library is imported here; each backend imports its peer's package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from typing import Any, Protocol

from benchmarks import loop, payload

_BATCH_CONCURRENCY = 64  # in-flight publishes when a tick is behind (library backends)
# Shortest sleep between ticks. uvloop's timers have 1 ms resolution, so sleeping for
# the sub-millisecond gaps of thousands of events/s spun the publisher at 100 % of the
# load core; everything due by a tick goes out together instead.
_MIN_SLEEP = 0.002


class Backend(Protocol):
    async def publish(self, tools: list[str], seq: int) -> None: ...

    async def close(self) -> None: ...


class RawRedis:
    """``PUBLISH tool <event>`` over a tiny pipelined RESP connection (cheap for the core).

    This is exactly what encode/broadcaster's ``publish`` sends, and what the two
    baselines consume.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        # Concurrent publishes write at once and then read their replies in turn: the
        # lock is FIFO and taken right after the write, so replies match their requests.
        self._replies = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str) -> RawRedis:
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, port = host_port.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def publish(self, tools: list[str], seq: int) -> None:
        chunks = []
        for tool in tools:
            message = payload.story_text(tool, seq).encode()
            chunks.append(_resp(b"PUBLISH", tool.encode(), message))
        self._writer.write(b"".join(chunks))
        async with self._replies:
            for _ in tools:
                reply = await self._reader.readline()
                if not reply.startswith(b":"):
                    raise RuntimeError(f"redis said {reply!r}")

    async def close(self) -> None:
        self._writer.close()


def _resp(*words: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


class Livefeed:
    """livefeed's own ``AsyncPublisher``: validation, history and publish in one script."""

    def __init__(self, url: str) -> None:
        from livefeed import AsyncPublisher

        self._pub: Any = AsyncPublisher.from_url(url)

    async def publish(self, tools: list[str], seq: int) -> None:
        await self._pub.story(
            tools=tools,
            author=payload.AUTHOR,
            title=f"{payload.TITLE} {seq}",
            body=payload.body(),
        )

    async def close(self) -> None:
        closer = getattr(self._pub, "aclose", None) or getattr(self._pub, "close", None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                await result


class SocketIO:
    """python-socketio's ``AsyncRedisManager(write_only=True).emit`` to the tool's room."""

    def __init__(self, url: str) -> None:
        import socketio

        self._mgr: Any = socketio.AsyncRedisManager(url, write_only=True)

    async def publish(self, tools: list[str], seq: int) -> None:
        for tool in tools:
            await self._mgr.emit("story", payload.story(tool, seq), room=tool, namespace="/")

    async def close(self) -> None:
        return None


class Channels:
    """Django Channels' ``group_send`` through channels_redis (the layer the server uses)."""

    def __init__(self, url: str) -> None:
        from benchmarks.peers.channels_app import make_layer

        self._layer: Any = make_layer(url)

    async def publish(self, tools: list[str], seq: int) -> None:
        for tool in tools:
            text = payload.story_text(tool, seq)
            await self._layer.group_send(tool, {"type": "story", "text": text})

    async def close(self) -> None:
        return None


class NchanHttp:
    """Nchan's HTTP publisher location (``POST /pub/<tool>``) over keep-alive connections."""

    def __init__(self, url: str, pool: int = 32) -> None:
        self._host, port = url.split("//", 1)[1].rstrip("/").rsplit(":", 1)
        self._port = int(port)
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._pool = pool

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._pool > 0:
            self._pool -= 1
            return await asyncio.open_connection(self._host, self._port)
        return await self._idle.get()

    async def publish(self, tools: list[str], seq: int) -> None:
        for tool in tools:
            body = payload.story_text(tool, seq).encode()
            try:
                await self._post(tool, body, await self._connection())
            except (asyncio.IncompleteReadError, ConnectionError):
                # nginx closed an idle keep-alive connection: one retry on a new one.
                self._pool += 1
                await self._post(tool, body, await self._connection())

    async def _post(
        self, tool: str, body: bytes, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]
    ) -> None:
        reader, writer = conn
        writer.write(
            f"POST /pub/{tool} HTTP/1.1\r\nHost: {self._host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.1 201", b"HTTP/1.1 202")):
            raise RuntimeError(f"nchan said {head[:80]!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        self._idle.put_nowait(conn)

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()


async def make_backend(kind: str, url: str) -> Backend:
    if kind == "redis":
        return await RawRedis.connect(url)
    if kind == "livefeed":
        return Livefeed(url)
    if kind == "socketio":
        return SocketIO(url)
    if kind == "channels":
        return Channels(url)
    if kind == "nchan":
        return NchanHttp(url)
    raise SystemExit(f"unknown backend {kind!r}")


async def publish_at_rate(
    backend: Backend, tools: list[str], rate: float, duration: float, seed: int
) -> dict[str, Any]:
    """Publish ``rate`` events/s for ``duration`` s on an absolute schedule (no drift)."""
    rng = random.Random(seed)
    total = max(1, round(rate * duration))
    per_tool = [0] * len(tools)
    cpu0, start = time.process_time(), time.monotonic()
    sent, max_lag = 0, 0.0
    gate = asyncio.Semaphore(_BATCH_CONCURRENCY)

    async def one(index: int, seq: int) -> None:
        async with gate:
            await backend.publish([tools[index]], seq)

    while sent < total:
        due = start + sent / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(max(due - now, _MIN_SLEEP))
            now = time.monotonic()
        max_lag = max(max_lag, now - due)
        # Everything that is due by now goes out together (matters at thousands/s).
        batch = min(total, int((now - start) * rate) + 1) - sent
        jobs = []
        for _ in range(batch):
            index = rng.randrange(len(tools)) if len(tools) > 1 else 0
            per_tool[index] += 1
            jobs.append(one(index, sent))
            sent += 1
        await asyncio.gather(*jobs)
    elapsed = time.monotonic() - start
    return {
        "sent": sent,
        "per_tool": per_tool,
        "elapsed": elapsed,
        "max_lag": max_lag,
        "cpu": time.process_time() - cpu0,
    }


async def serve(backend: Backend, tools: list[str]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    seq = 10**9  # sync events get their own sequence range
    while line := await reader.readline():
        command = json.loads(line)
        if command["op"] == "quit":
            break
        if command["op"] == "sync":
            for tool in tools:
                seq += 1
                await backend.publish([tool], seq)
            answer: dict[str, Any] = {"ok": True}
        else:
            answer = await publish_at_rate(
                backend, tools, command["rate"], command["duration"], command.get("seed", 1)
            )
        print(json.dumps(answer), flush=True)
    await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True)
    parser.add_argument("--url", required=True, help="redis://... or http://host:port (nchan)")
    parser.add_argument("--tools", required=True, help="comma-separated tool slugs")
    args = parser.parse_args()

    async def run() -> None:
        await serve(await make_backend(args.backend, args.url), args.tools.split(","))

    loop.run(run())


if __name__ == "__main__":
    main()
