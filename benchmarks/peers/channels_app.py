"""Django Channels with channels_redis: a consumer per connection, ``group_send`` per event.

The layer is ``RedisPubSubChannelLayer`` (one Redis PUBLISH per group message, then local
fan-out); ``BENCH_CHANNELS_LAYER=core`` selects the classic ``RedisChannelLayer``
(a message per member, through Redis sorted sets).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings

from benchmarks.peers.asgi import parse_args, readyz, serve, subscribed_frame, tools_of

_LAYERS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}


def configure(redis_url: str) -> None:
    if not settings.configured:
        backend = _LAYERS[os.environ.get("BENCH_CHANNELS_LAYER", "pubsub")]
        settings.configure(
            DEBUG=False,
            SECRET_KEY="benchmark-only",
            ALLOWED_HOSTS=["*"],
            INSTALLED_APPS=["channels"],
            CHANNEL_LAYERS={"default": {"BACKEND": backend, "CONFIG": {"hosts": [redis_url]}}},
        )
        django.setup()


def make_layer(redis_url: str) -> Any:
    """The configured channel layer (the publisher process uses it for ``group_send``)."""
    configure(redis_url)
    from channels.layers import get_channel_layer

    return get_channel_layer()


def build(redis_url: str) -> Any:
    configure(redis_url)
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.routing import ProtocolTypeRouter

    class Feed(AsyncWebsocketConsumer):  # type: ignore[misc]
        tools: list[str] = []

        async def connect(self) -> None:
            self.tools = tools_of(self.scope["query_string"].decode())
            await self.accept()
            for tool in self.tools:
                await self.channel_layer.group_add(tool, self.channel_name)
                await self.send(text_data=subscribed_frame(tool))

        async def disconnect(self, code: int) -> None:
            for tool in self.tools:
                await self.channel_layer.group_discard(tool, self.channel_name)

        async def story(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    return ProtocolTypeRouter({"http": readyz, "websocket": Feed.as_asgi()})


if __name__ == "__main__":
    args = parse_args(__doc__ or "")
    serve(build(args.redis_url), args.port)
