"""Tokens and private tools, the origin allowlist, publish keys, secrets kept out of logs."""

from __future__ import annotations

import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from livefeed.tokens import mint
from tests.conftest import StartServer
from tests.support.clients import WsClient, publish_ok, story, unique_tool
from tests.support.server import ServerProcess
from tests.support.sse import open_sse
from tests.support.timing import TIMEOUT

SECRET = "a-test-secret-that-is-32-bytes-long!"


@pytest.fixture
def private(start_server: StartServer) -> ServerProcess:
    return start_server({"LIVEFEED_SECRET": SECRET, "LIVEFEED_PRIVATE_TOOLS": "secret-tool"})


def token(sub: str = "laura_garcia", tools: list[str] | None = None, ttl: float = 600) -> str:
    return mint(SECRET, sub, tools or ["secret-tool"], ttl)


async def connect(server: ServerProcess, **query: str) -> WsClient:
    client = await WsClient.open(server.ws_url, **query)
    await client.welcome()
    return client


async def test_a_private_tool_needs_a_token_that_lists_it(private: ServerProcess):
    anonymous = await connect(private)
    await anonymous.send({"type": "subscribe", "tools": ["secret-tool", "flask"], "ref": "1"})
    error = await anonymous.expect("error")
    assert (error["code"], error["tool"], error["ref"]) == ("forbidden", "secret-tool", "1")
    assert (await anonymous.expect("subscribed"))["tool"] == "flask"  # the rest still works
    other = await connect(private, token=token(tools=["flask"]))
    await other.send({"type": "subscribe", "tools": ["secret-tool"]})
    assert (await other.expect("error"))["code"] == "forbidden"
    member = await connect(private, token=token())
    [reply] = await member.subscribe(["secret-tool"])
    assert reply["tool"] == "secret-tool"
    [event] = await publish_ok(private.url, story(["secret-tool"], "members only"))
    assert (await member.events(1))[0]["id"] == event["id"]
    for client in (anonymous, other, member):
        await client.close()


async def test_the_firehose_needs_an_all_tools_token_while_tools_are_private(
    private: ServerProcess,
):
    client = await connect(private, token=token())
    await client.send({"type": "subscribe", "tools": ["*"]})
    assert (await client.expect("error"))["code"] == "forbidden"
    everything = await connect(private, token=token(tools=["*"]))
    assert (await everything.subscribe(["*"]))[0]["tool"] == "*"
    await client.close()
    await everything.close()


async def test_the_auth_frame(private: ServerProcess):
    client = await connect(private)
    await client.send({"type": "auth", "token": "not-a-jwt", "ref": "a"})
    assert (await client.expect("error"))["code"] == "unauthorized"
    forged = mint("another-secret-that-is-32-bytes-long", "mallory", ["*"])
    await client.send({"type": "auth", "token": forged, "ref": "b"})
    assert (await client.expect("error"))["code"] == "unauthorized"
    await client.send({"type": "auth", "token": token(), "ref": "c"})
    reply = await client.expect("authenticated")
    assert (reply["sub"], reply["ref"]) == ("laura_garcia", "c") and reply["exp"] > time.time()
    assert (await client.subscribe(["secret-tool"]))[0]["tool"] == "secret-tool"
    # A new token without the tool takes its subscription away.
    await client.send({"type": "auth", "token": token(tools=["flask"]), "ref": "d"})
    error = await client.expect("error")
    assert (error["code"], error["tool"]) == ("forbidden", "secret-tool")
    await client.expect("authenticated")
    await client.close()


async def test_an_expired_token_closes_with_4001(private: ServerProcess):
    expired = mint(SECRET, "laura_garcia", ["secret-tool"], ttl=-10)
    at_connect = await connect(private, token=expired)
    assert await at_connect.closed_with() == 4001
    by_frame = await connect(private)
    await by_frame.send({"type": "auth", "token": expired})
    assert await by_frame.closed_with() == 4001


async def test_a_token_that_expires_on_a_live_connection_closes_it_with_4001(
    private: ServerProcess,
):
    client = await connect(private, token=token(ttl=1.5))
    await client.subscribe(["secret-tool"])
    assert await client.closed_with(timeout=TIMEOUT) == 4001


async def test_presence_lists_authenticated_handles(private: ServerProcess):
    tool = unique_tool()
    clients = [
        await connect(private, token=token("laura_garcia", [tool])),
        await connect(private, token=token("klodnitsky", [tool])),
        await connect(private, token=token("klodnitsky", [tool])),
        await connect(private),
    ]
    for client in clients:
        await client.subscribe([tool])
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        body = (await http.get(f"{private.url}/api/tools/{tool}/presence")).json()
    assert body == {"tool": tool, "count": 4, "users": ["klodnitsky", "laura_garcia"]}
    for client in clients:
        await client.close()


async def test_http_reads_of_a_private_tool_take_the_token(private: ServerProcess):
    await publish_ok(private.url, story(["secret-tool"], "hidden"))
    async with httpx.AsyncClient(base_url=private.url, timeout=TIMEOUT) as http:
        for path in ("/api/tools/secret-tool/events", "/api/tools/secret-tool/presence"):
            denied = await http.get(path)
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
            bad = await http.get(path, params={"token": "garbage"})
            assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
            assert (await http.get(path, params={"token": token()})).status_code == 200
            bearer = await http.get(path, headers={"Authorization": f"Bearer {token()}"})
            assert bearer.status_code == 200
        events = await http.get("/api/tools/secret-tool/events", params={"token": token()})
        assert events.json()["events"][0]["data"]["title"] == "hidden"
        assert (await http.get("/api/presence", params={"tools": "secret-tool"})).status_code == 403


async def test_sse_takes_the_token_too(private: ServerProcess):
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await open_sse(http, f"{private.url}/sse?tools=secret-tool&token={token(ttl=1.5)}")
        assert sse.response.status_code == 200
        await sse.wait_for("subscribed")
        # The stream ends when the token expires, saying why as a WebSocket would.
        closing = await sse.wait_for("close")
        assert closing.json() == {"type": "close", "code": 4001, "reason": "token expired"}
        with pytest.raises(EOFError):
            await sse.next()


async def test_an_sse_stream_answers_a_forbidden_tool_and_streams_the_others(
    private: ServerProcess,
):
    url = f"{private.url}/sse?tools=secret-tool,flask"
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        anonymous = await open_sse(http, url)
        garbage = await open_sse(http, url + "&token=garbage")
        for sse in (anonymous, garbage):
            assert sse.response.status_code == 200
        invalid = (await garbage.wait_for("error")).json()
        assert invalid["code"] == "unauthorized"
        for sse in (anonymous, garbage):
            error = (await sse.wait_for("error")).json()
            assert (error["code"], error["tool"]) == ("forbidden", "secret-tool")
            assert (await sse.wait_for("subscribed")).json()["tool"] == "flask"
            await sse.wait_for("position")  # live from here on
        published = await publish_ok(private.url, story(["secret-tool", "flask"], "both"))
        [flask] = [event for event in published if event["tool"] == "flask"]
        for sse in (anonymous, garbage):
            [got] = await sse.events(1)  # the flask copy only
            assert (got["id"], got["tool"]) == (flask["id"], "flask")


async def test_an_sse_stream_with_an_expired_token_closes_with_4001_at_once(
    private: ServerProcess,
):
    expired = token(ttl=-5)
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await open_sse(http, f"{private.url}/sse?tools=secret-tool,flask&token={expired}")
        assert sse.response.status_code == 200
        first = await sse.next()
        while first.comment or first.event not in {"close", "subscribed", "error"}:
            first = await sse.next()
        assert first.event == "close" and first.json()["code"] == 4001  # nothing subscribed
        with pytest.raises(EOFError):
            await sse.next()


async def test_the_origin_allowlist(start_server: StartServer):
    server = start_server({"LIVEFEED_ALLOWED_ORIGINS": "https://community.example"})
    with pytest.raises(InvalidStatus) as refused:
        await WsClient.open(server.ws_url, additional_headers={"Origin": "https://evil.example"})
    assert refused.value.response.status_code == 403
    allowed = await WsClient.open(
        server.ws_url, additional_headers={"Origin": "https://community.example"}
    )
    await allowed.welcome()
    no_origin = await WsClient.open(server.ws_url)  # not a browser: no Origin, no check
    await no_origin.welcome()
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        sse = await http.get(
            f"{server.url}/sse?tools=flask", headers={"Origin": "https://evil.example"}
        )
        assert sse.status_code == 403
    await allowed.close()
    await no_origin.close()


async def test_several_publish_keys_work_at_once_for_rotation(start_server: StartServer):
    server = start_server({"LIVEFEED_PUBLISH_KEYS": "key-2026-08,key-2026-11"})
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        for key in ("key-2026-08", "key-2026-11"):
            response = await http.post(
                "/api/events", json=story(["flask"]), headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 202


async def test_tokens_and_keys_never_reach_the_logs(start_server: StartServer):
    key = "publish-key-that-must-not-be-logged"
    server = start_server(
        {
            "LIVEFEED_SECRET": SECRET,
            "LIVEFEED_PUBLISH_KEYS": key,
            "LIVEFEED_PRIVATE_TOOLS": "secret-tool",
        }
    )
    secret_token = token()
    client = await connect(server, token=secret_token, tools="secret-tool")
    await client.expect("subscribed")
    await client.send({"type": "auth", "token": "garbage.token.value"})
    await client.expect("error")
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        await http.post(
            "/api/events", json=story(["flask"]), headers={"Authorization": f"Bearer {key}"}
        )
        await http.get("/api/tools/secret-tool/events", params={"token": secret_token})
        await http.get("/sse", params={"tools": "nope nope", "token": secret_token})
    await client.close()
    server.terminate()
    log = server.log()
    assert "GET /api/tools/secret-tool/events?token=[redacted]" in log  # access log is on
    assert secret_token not in log and key not in log
    assert secret_token.split(".")[1] not in log


async def test_another_site_may_read_a_private_tool_with_a_bearer_token(private: ServerProcess):
    url = f"{private.url}/api/tools/secret-tool/events"
    origin = {"Origin": "https://community.example"}
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        preflight = await http.options(
            url,
            headers={
                **origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        read = await http.get(url, headers={**origin, "Authorization": f"Bearer {token()}"})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == "*"
