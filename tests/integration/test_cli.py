"""The commands, run as a user runs them: publish, tail, demo, serve --demo, the Procfile."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from livefeed.tokens import mint
from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, publish_ok, stored, story, unique_tool
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.server import PUBLISH_KEY, ServerProcess, _clean_environ
from tests.support.timing import TIMEOUT, wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-test-secret-that-is-32-bytes-long!"


def livefeed(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livefeed", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**_clean_environ(), **(env or {})},
    )


def test_publish_a_story_from_flags(server: ServerProcess):
    tool = unique_tool()
    done = livefeed(
        "publish",
        "--url",
        server.url,
        "--key",
        PUBLISH_KEY,
        "--tool",
        tool,
        "--title",
        "From the shell",
        "--author",
        "laura_garcia",
    )
    assert done.returncode == 0, done.stderr
    [event] = stored(server.url, tool)
    assert done.stdout.split() == [tool, event["id"]]
    assert event["data"]["title"] == "From the shell"


def test_publish_a_batch_from_stdin_and_a_refusal(server: ServerProcess):
    tool = unique_tool()
    batch = {"events": [story([tool], "a"), story([tool], "b")]}
    done = livefeed(
        "publish",
        "--url",
        server.url,
        "--key",
        PUBLISH_KEY,
        "-",
        stdin=orjson.dumps(batch).decode(),
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2
    refused = livefeed(
        "publish",
        "--url",
        server.url,
        "--key",
        PUBLISH_KEY,
        "--tool",
        tool,
        "--title",
        "x",
        "--author",
        "has space",
    )
    assert refused.returncode == 1
    assert "invalid_event" in refused.stderr and "data.author.handle" in refused.stderr
    assert len(stored(server.url, tool)) == 2


def test_publish_straight_into_redis(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    done = livefeed(
        "publish",
        "--redis-url",
        redis_server.url,
        "--redis-prefix",
        prefix,
        "--tool",
        tool,
        "--title",
        "direct",
        "--author",
        "a",
    )
    assert done.returncode == 0, done.stderr
    assert [e["data"]["title"] for e in stored(server.url, tool)] == ["direct"]


async def test_tail_prints_events_as_json_lines(server: ServerProcess):
    tool = unique_tool()
    ids = [(await publish_ok(server.url, story([tool], f"t{i}")))[0]["id"] for i in range(3)]
    tail = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "livefeed",
        "tail",
        tool,
        "--url",
        server.url,
        "--history",
        "2",
        "--count",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_clean_environ(),
    )
    assert tail.stdout is not None and tail.stderr is not None
    while b"subscribed" not in await asyncio.wait_for(tail.stderr.readline(), TIMEOUT):
        pass
    [live] = await publish_ok(server.url, story([tool], "live"))
    out, _ = await asyncio.wait_for(tail.communicate(), TIMEOUT)
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [e["id"] for e in lines] == [*ids[1:], live["id"]]
    assert tail.returncode == 0


async def tail_process(*args: str) -> asyncio.subprocess.Process:
    """``livefeed tail ARGS``, once its subscribe is answered."""
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livefeed", "tail", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_clean_environ(),
    )  # fmt: skip
    assert tail.stderr is not None
    while b"subscribed" not in await asyncio.wait_for(tail.stderr.readline(), TIMEOUT):
        pass
    return tail


async def test_tail_says_why_it_ends_when_the_server_shuts_down(start_server: StartServer):
    server = start_server()
    tail = await tail_process("flask", "--url", server.url)
    server.terminate()
    _, stderr = await asyncio.wait_for(tail.communicate(), TIMEOUT)
    assert tail.returncode == 1
    assert stderr.decode().splitlines() == [
        "livefeed: the server closed the connection: 1001 (server shutting down)"
    ]


def test_tail_ends_with_one_line_when_its_token_expires(start_server: StartServer):
    """A close the websockets library calls an error (4001 here; 4008, 1011, a lost
    connection) ended tail with a traceback."""
    server = start_server({"LIVEFEED_SECRET": SECRET, "LIVEFEED_PRIVATE_TOOLS": "secret-tool"})
    # 3 s (exp is whole seconds: 2-3 s left): the subprocess is subscribed well before.
    token = mint(SECRET, "laura_garcia", ["secret-tool"], 3)
    tail = livefeed("tail", "secret-tool", "--url", server.url, "--token", token)
    assert tail.returncode == 1
    last = tail.stderr.splitlines()[-1]
    assert last.startswith("livefeed: the server closed the connection: 4001"), tail.stderr
    assert "Traceback" not in tail.stderr
    # Expired before it connects: the server closes at once, maybe before tail's send.
    expired = mint(SECRET, "laura_garcia", ["secret-tool"], -10)
    late = livefeed("tail", "secret-tool", "--url", server.url, "--token", expired)
    assert late.returncode == 1 and "Traceback" not in late.stderr, late.stderr
    assert late.stderr.splitlines()[-1].startswith(
        "livefeed: the server closed the connection: 4001"
    )


def test_tail_exits_when_no_tool_could_be_subscribed(server: ServerProcess):
    """It waited for ever, subscribed to nothing."""
    refused = livefeed("tail", "Bad Tool", "--url", server.url)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-2:] == [
        "livefeed: invalid_tool: not a tool name: 'Bad Tool'",
        "livefeed: none of the tools could be subscribed",
    ]
    out_of_range = livefeed("tail", "flask", "--url", server.url, "--history", "101")
    assert out_of_range.returncode == 2
    assert "--history: expected an integer from 0 to 100, got '101'" in out_of_range.stderr
    assert livefeed("tail", "flask", "--url", server.url, "--count", "0").returncode == 2


def test_demo_publishes_realistic_events(server: ServerProcess):
    done = livefeed(
        "demo",
        "--url",
        server.url,
        "--key",
        PUBLISH_KEY,
        "--count",
        "12",
        "--rate",
        "200",
        "--seed",
        "7",
    )
    assert done.returncode == 0, done.stderr
    assert "published 12 demo events" in done.stderr
    firehose = stored(server.url, "%2A")
    kinds = {e["kind"] for e in firehose}
    assert kinds <= {"story", "activity"} and len(firehose) >= 12


async def test_serve_demo_makes_the_feed_move(start_server: StartServer):
    server = start_server(args=("--demo", "--demo-rate", "50"))
    client = await WsClient.subscribed(server.ws_url, "*")
    events = await client.events(3)
    assert all(e["channel"] == "*" for e in events)
    await client.close()


def test_the_procfile_web_command_serves_on_port():
    [line] = [line for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()]
    kind, command = line.split(":", 1)
    assert kind == "web"
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **_clean_environ(),
        "PORT": str(port),
        "PATH": f"{bin_dir}:{_clean_environ().get('PATH', '')}",
    }
    process = subprocess.Popen(
        # exec: the shell becomes the server, so terminating it stops the server.
        ["sh", "-c", f"exec {command}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: process.poll() is not None or healthy(), what="the Procfile server")
        assert process.poll() is None and healthy()
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_help_and_bad_configuration():
    assert livefeed("--help").returncode == 0
    bad = livefeed("serve", "--history-size", "0")
    assert bad.returncode == 2 and "positive" in bad.stderr
    bad = livefeed("serve", "--port", "70000")
    assert bad.returncode == 2 and "expected a TCP port (0-65535), got '70000'" in bad.stderr
    # Each of these had started with a traceback, or with WebSockets that all failed.
    for variable, value in [
        ("LIVEFEED_LOG_LEVEL", "verbose"),
        ("PORT", "70000"),
        ("LIVEFEED_REDIS_URL", "http://127.0.0.1:1"),
        ("LIVEFEED_HEARTBEAT", "inf"),
    ]:
        refused = livefeed("serve", env={variable: value})
        assert refused.returncode == 2, refused.stderr
        assert (
            refused.stderr.startswith(f"livefeed: {variable}: ")
            and "Traceback" not in refused.stderr
        )


def test_commands_fail_with_one_line_not_a_traceback(server: ServerProcess):
    unreachable = f"http://127.0.0.1:{free_port()}"
    tail = livefeed("tail", "flask", "--url", unreachable)
    assert tail.returncode == 1 and tail.stderr.startswith(
        f"livefeed: cannot connect to {unreachable}"
    )
    # token reads only the secret: another setting's bad value is not its business.
    secret = "s" * 32
    token = livefeed(
        "token", "--sub", "a", "--tools", "flask", env={"PORT": "abc", "LIVEFEED_SECRET": secret}
    )
    assert token.returncode == 0 and token.stdout.count(".") == 2
    short = livefeed("token", "--sub", "a", "--tools", "flask", env={"LIVEFEED_SECRET": "short"})
    assert short.returncode == 2 and "at least 32 bytes" in short.stderr
    zero = livefeed("demo", "--url", server.url, "--key", PUBLISH_KEY, "--rate", "0")
    assert zero.returncode == 2 and "--rate: expected a positive number" in zero.stderr
    # A publisher reads only its own settings: the server's, even wrong, are not its.
    published = livefeed(
        "publish", "--url", server.url, "--key", PUBLISH_KEY, "--tool", "flask", "--title", "t",
        "--author", "a", env={"LIVEFEED_PRIVATE_TOOLS": "flask", "LIVEFEED_HEARTBEAT": "inf"},
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    # A wrong publish key refuses every publish: the demo stops (it had gone on for ever).
    wrong = livefeed("demo", "--url", server.url, "--key", "wrong", "--count", "3")
    assert wrong.returncode == 1 and "demo stopped: unknown publish key" in wrong.stderr


async def test_json_logs_are_one_object_per_line(start_server: StartServer):
    server = start_server({"LIVEFEED_LOG_JSON": "1"})
    client = await WsClient.open(server.ws_url, tools="flask")
    await client.welcome()
    await client.close()
    server.terminate()
    lines = [orjson.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line["logger"] == "livefeed" for line in lines)
    assert any("WebSocket /ws" in line["msg"] for line in lines)


async def test_serve_runs_in_one_thread_with_redis(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    # A second thread would put every system call of the fan-out on the kernel's slow
    # path for file lookups (docs/architecture.md, "Smaller things that measured well").
    server = start_server(redis_env(redis_server, prefix))
    assert server.process is not None
    tool = unique_tool()
    client = await WsClient.open(server.ws_url)
    await client.welcome()
    await client.subscribe([tool])
    await publish_ok(server.url, story([tool], "One thread"))
    assert (await client.events(1))[0]["data"]["title"] == "One thread"
    await client.close()
    threads = os.listdir(f"/proc/{server.process.pid}/task")
    assert len(threads) == 1, threads
