"""``create_app(settings)``: picks the broker, builds the hub, the routes and the lifespan.

The only module that names a concrete broker. Shutdown runs in order (habit 12):
stop accepting (uvicorn), close every connection with 1001 and wait for them with a
deadline, stop the demo, close the hub, close the broker last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from livefeed.auth import Access, origin_allowed
from livefeed.brokers.memory import MemoryBroker
from livefeed.brokers.redis import RedisBroker
from livefeed.config import Settings
from livefeed.demo import run_demo
from livefeed.errors import Forbidden, NoRoute
from livefeed.events import prepare
from livefeed.hub import Hub
from livefeed.presence import Presence
from livefeed.protocol import CloseCode
from livefeed.session import Services, SessionSet, count_close
from livefeed.transports.api import Api, count_published, error_response
from livefeed.transports.sse import ended_stream, serve_sse
from livefeed.transports.ws import serve_websocket

log = logging.getLogger("livefeed")


def static_dir() -> Path:
    """``livefeed/static`` in an installed wheel, else the repository's ``static/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "static", here.parent / "static"):
        if candidate.is_dir():
            return candidate
    return here / "static"


def make_broker(settings: Settings) -> MemoryBroker | RedisBroker:
    if settings.redis_url:
        return RedisBroker(
            settings.redis_url,
            settings.redis_prefix,
            settings.history_size,
            settings.idempotency_ttl,
        )
    return MemoryBroker(settings.history_size, settings.idempotency_ttl)


class Runtime:
    """Everything one server process holds, in the order it is built and torn down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = make_broker(settings)
        self.hub = Hub(self.broker, settings.history_size, settings.outbox_frames)
        self.presence = Presence(self.broker)
        self.access = Access(settings.private_tools, settings.secret)
        self.api = Api(self.broker, self.presence, self.access, settings)
        self.sessions = SessionSet()
        self.services = Services(self.hub, self.presence, self.access, settings, self.sessions)

        self._demo: asyncio.Task[int] | None = None
        self._draining = False

    async def start(self) -> None:
        await self.broker.start()
        await self.presence.start()
        if self.settings.demo:
            self._demo = asyncio.create_task(
                run_demo(self._publish_demo, self.settings.demo_rate), name="livefeed demo"
            )
        log.info("livefeed ready: broker=%s", "redis" if self.settings.redis_url else "embedded")

    async def _publish_demo(self, request: dict[str, Any]) -> object:
        batch = prepare(request)
        published = await self.broker.publish(batch, time.time())
        count_published(batch)
        return published

    async def drain(self, deadline: float) -> None:
        """Close every connection with 1001 and wait for them, up to ``deadline`` seconds."""
        if self._draining:
            return
        self._draining = True
        count = len(self.sessions)
        for session in self.sessions:
            session.close(CloseCode.GOING_AWAY, "server shutting down")
        try:
            await asyncio.wait_for(self.sessions.wait_empty(), deadline)
        except TimeoutError:
            log.warning("%d of %d connections did not close in time", len(self.sessions), count)
        log.info("closed %d connections with 1001", count)

    async def stop(self) -> None:
        await self.drain(5.0)
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._demo
        await self.presence.close()
        await self.hub.close()
        await self.broker.close()

    @property
    def draining(self) -> bool:
        return self._draining


async def http_error(request: Request, exc: Exception) -> Response:
    """The router's 404 and 405: under ``/api/`` in the API's JSON error shape, so a
    client reads every API error the same way; elsewhere as Starlette says them."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return error_response(NoRoute(exc.status_code, exc.detail), exc.headers)
    return PlainTextResponse(exc.detail, exc.status_code, exc.headers)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    runtime = Runtime(settings)
    static = static_dir()

    async def websocket(ws: WebSocket) -> None:
        if not origin_allowed(ws.headers.get("origin"), settings.allowed_origins):
            await ws.close()  # before accepting: the handshake is refused with 403
            return
        if runtime.draining:
            # Accepted, then closed: a close before accepting is a 403 on the wire, which
            # a browser sees as 1006, not as "shutting down, resume elsewhere".
            await ws.accept()
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            count_close(CloseCode.GOING_AWAY)
            return
        await serve_websocket(ws, runtime.services)

    async def sse(request: Request) -> Response:
        if not origin_allowed(request.headers.get("origin"), settings.allowed_origins):
            return error_response(Forbidden("this origin may not connect"))
        if runtime.draining:  # as a WebSocket would be closed: 1001, reconnect elsewhere
            return ended_stream(CloseCode.GOING_AWAY, "server shutting down")
        return await serve_sse(request, runtime.services)

    async def index(request: Request) -> Response:
        page = static / "index.html"
        if not page.is_file():
            return PlainTextResponse("livefeed is running; the dashboard is not installed", 404)
        return FileResponse(page)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    routes = [
        Route("/", index),
        Route("/healthz", runtime.api.healthz),
        Route("/readyz", runtime.api.readyz),
        Route("/metrics", runtime.api.metrics),
        Route("/api/events", runtime.api.publish, methods=["POST"]),
        Route("/api/tools/{tool}/events", runtime.api.tool_events),
        Route("/api/tools/{tool}/presence", runtime.api.tool_presence),
        Route("/api/presence", runtime.api.presence),
        Route("/sse", sse),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=static, check_dir=False), name="static"),
    ]
    # Reads are public (private tools check their token per request), so any page may
    # fetch them: the widget runs on other sites. Publishing is not offered to browsers.
    origins = list(settings.allowed_origins) or ["*"]
    # A private tool's token may come as `Authorization: Bearer` (CONTRACT.md).
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )
    ]

    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )

    app.state.runtime = runtime
    return app
