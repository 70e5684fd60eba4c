"""``livefeed serve | publish | tail | token | demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from livefeed.config import (
    SETTINGS,
    ConfigError,
    Settings,
    check_secret,
    one_setting,
    positive_float,
    positive_int,
    switch,
)
from livefeed.protocol import MAX_HISTORY

DEFAULT_URL = "http://127.0.0.1:8000"


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A setting's parser as an argparse type: its own message, not "invalid _port value"."""

    def parse_argument(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_argument


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the server")
    for setting in SETTINGS:
        # An on/off setting gets --X and --no-X: either beats the environment.
        kind: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if setting.parse is switch
            else {"type": _argument(setting.parse)}
        )
        serve.add_argument(
            _flag(setting.field),
            dest=setting.field,
            help=f"{setting.help} [{' / '.join(setting.env)}]",
            **kind,
        )


def serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings ``livefeed serve``'s flags give (None where a flag was not given)."""
    return {s.field: getattr(args, s.field, None) for s in SETTINGS}


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(**serve_overrides(args))
    except ConfigError as exc:
        print(f"livefeed: {exc}", file=sys.stderr)
        return 2
    from livefeed.server import run

    return run(settings)


def _publisher_from(args: argparse.Namespace) -> Any:
    from livefeed.publisher import Publisher

    if args.redis_url:
        return Publisher.from_url(args.redis_url, prefix=args.redis_prefix)
    return Publisher.from_url(args.url, key=args.key)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LIVEFEED_URL", DEFAULT_URL),
        help="server to publish to over HTTP [LIVEFEED_URL]",
    )
    parser.add_argument("--key", default=_first_key(), help="publish key [LIVEFEED_PUBLISH_KEYS]")
    parser.add_argument(
        "--redis-url", default=None, help="publish straight into this Redis instead of over HTTP"
    )
    parser.add_argument(
        "--redis-prefix", default=os.environ.get("LIVEFEED_REDIS_PREFIX", "livefeed:")
    )


def _first_key() -> str | None:
    keys = os.environ.get("LIVEFEED_PUBLISH_KEYS", "")
    return keys.split(",")[0].strip() or None


def _add_publish(commands: Any) -> None:
    publish = commands.add_parser(
        "publish",
        help="publish one event or a batch",
        description='Publish a JSON event ({"kind": ...}) or batch ({"events": [...]}), '
        "given as an argument or on stdin ('-'), or a story built from --tool/--title/--author.",
    )
    publish.add_argument("document", nargs="?", help="JSON text, or - for stdin")
    publish.add_argument("--tool", action="append", dest="tools", help="story tool (repeatable)")
    publish.add_argument("--title", help="story title")
    publish.add_argument("--author", help="story author handle")
    publish.add_argument("--body", default="", help="story body")
    _add_target(publish)


def _publish(args: argparse.Namespace) -> int:
    from livefeed.errors import LivefeedError

    if args.document:
        text = sys.stdin.read() if args.document == "-" else args.document
        try:
            document = json.loads(text)
        except ValueError as exc:
            print(f"livefeed: not JSON: {exc}", file=sys.stderr)
            return 2
    elif args.tools and args.title and args.author:
        document = {
            "kind": "story",
            "tools": args.tools,
            "data": {"author": {"handle": args.author}, "title": args.title, "body": args.body},
        }
    else:
        print("livefeed: give a JSON document, or --tool, --title and --author", file=sys.stderr)
        return 2
    publisher = _publisher_from(args)
    try:
        published = publisher.publish(document)
    except LivefeedError as exc:
        print(f"livefeed: {exc.code}: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    for ids in published:
        for tool, event_id in ids.items():
            print(f"{tool} {event_id}")
    return 0


def _add_tail(commands: Any) -> None:
    tail = commands.add_parser("tail", help="print the live events of tools as JSON lines")
    tail.add_argument("tools", nargs="+", metavar="TOOL", help="tool slugs, or * for all")
    tail.add_argument("--url", default=os.environ.get("LIVEFEED_URL", DEFAULT_URL))
    tail.add_argument(
        "--history", type=_argument(history_length), default=0, help="replay the last N events"
    )
    tail.add_argument("--count", type=_argument(positive_int), help="exit after N events")
    tail.add_argument("--token", default=None, help="subscriber token for private tools")


def history_length(value: str) -> int:
    number = int(value)
    if not 0 <= number <= MAX_HISTORY:
        raise ValueError(f"expected an integer from 0 to {MAX_HISTORY}, got {value!r}")
    return number


def _tail(args: argparse.Namespace) -> int:
    import websockets

    from livefeed.tail import tail

    try:
        return asyncio.run(tail(args.url, args.tools, args.history, args.count, args.token))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout's reader went (`livefeed tail x | head -1`): done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        print(f"livefeed: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1


def _add_token(commands: Any) -> None:
    token = commands.add_parser(
        "token", help="mint a subscriber token (JWT, HS256) for private tools"
    )
    token.add_argument("--sub", required=True, help="the user's handle")
    token.add_argument("--tools", required=True, help='comma-separated tool slugs, or "*"')
    token.add_argument("--ttl", type=float, default=3600, help="seconds until it expires")
    token.add_argument("--secret", default=None, help="signing secret [LIVEFEED_SECRET]")


def _token(args: argparse.Namespace) -> int:
    from livefeed.tokens import TokenError, mint

    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    try:
        # Only the secret is read: other settings, right or wrong, are the server's.
        secret = args.secret or one_setting("secret")
        if not secret:
            print("livefeed: give --secret or set LIVEFEED_SECRET", file=sys.stderr)
            return 2
        check_secret(secret)  # the server would refuse to verify with a shorter one
        print(mint(secret, args.sub, tools, args.ttl))
    except (ConfigError, TokenError) as exc:
        print(f"livefeed: {exc}", file=sys.stderr)
        return 2
    return 0


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="publish a steady stream of realistic stories and activity"
    )
    demo.add_argument("--rate", type=_argument(positive_float), default=2.0, help="events/s")
    demo.add_argument("--count", type=_argument(positive_int), help="stop after N events")
    demo.add_argument("--duration", type=_argument(positive_float), help="stop after N s")
    demo.add_argument("--seed", type=int, default=None)
    _add_target(demo)


def _demo(args: argparse.Namespace) -> int:
    from livefeed.demo import run_demo
    from livefeed.errors import Unauthorized

    publisher = _publisher_from(args)

    async def publish(request: dict[str, Any]) -> object:
        return await asyncio.to_thread(publisher.publish, request)

    try:
        sent = asyncio.run(run_demo(publish, args.rate, args.count, args.duration, args.seed))
    except KeyboardInterrupt:
        return 130
    except Unauthorized as exc:  # no later publish would be accepted either
        print(f"livefeed: demo stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    print(f"published {sent} demo events", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    """The ``livefeed`` command line: one subcommand per job."""
    parser = argparse.ArgumentParser(prog="livefeed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serve(commands)
    _add_publish(commands)
    _add_tail(commands)
    _add_token(commands)
    _add_demo(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {
        "serve": _serve,
        "publish": _publish,
        "tail": _tail,
        "token": _token,
        "demo": _demo,
    }

    return handler[args.command](args)
