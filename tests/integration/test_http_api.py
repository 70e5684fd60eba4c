"""HTTP publishing and history: success and every error status, on real servers."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from livefeed.brokers.redis_layout import PUBLISH_LUA
from tests.conftest import StartServer, redis_env
from tests.support.clients import WsClient, activity, publish, publish_ok, story, unique_tool
from tests.support.redis_server import RedisServer
from tests.support.relay import Relay
from tests.support.server import PUBLISH_KEY, ServerProcess
from tests.support.timing import TIMEOUT, async_wait_until

PUBLISH_SHA = hashlib.sha1(PUBLISH_LUA.encode()).hexdigest().encode()


async def history(server: ServerProcess, tool: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        return await http.get(f"/api/tools/{tool}/events", params=params)


async def titles(server: ServerProcess, tool: str) -> list[str]:
    response = await history(server, tool, limit="100")
    return [e["data"]["title"] for e in response.json()["events"]]


async def test_publish_is_accepted_stored_and_delivered(server: ServerProcess):
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    response = await publish(server.url, story([tool], "Accepted"))
    assert response.status_code == 202
    [ids] = [response.json()["events"]]
    assert ids == [{"tool": tool, "id": ids[0]["id"], "event": 0}]
    assert (await client.events(1))[0]["id"] == ids[0]["id"]
    assert await titles(server, tool) == ["Accepted"]
    await client.close()


async def test_a_batch_returns_every_id_in_order(server: ServerProcess):
    a, b = unique_tool(), unique_tool()
    ids = await publish_ok(server.url, {"events": [story([a, b], "one"), activity(b)]})
    assert [i["tool"] for i in ids] == [a, b, b]
    assert await titles(server, a) == ["one"]
    stored = (await history(server, b)).json()["events"]
    assert [e["id"] for e in stored] == [ids[1]["id"], ids[2]["id"]]


async def test_each_id_names_the_event_it_belongs_to_even_after_a_repeated_key(
    server: ServerProcess,
):
    a, b, c = unique_tool(), unique_tool(), unique_tool()
    key = f"key-{a}"
    first = await publish_ok(server.url, {**story([a, b], "original"), "idempotency_key": key})
    ids = await publish_ok(
        server.url,
        {"events": [{**story([a], "retry"), "idempotency_key": key}, story([c], "new")]},
    )
    # The repeated key answers with the original's tools (a and b), not the one asked.
    assert ids[:2] == first
    assert [(i["tool"], i["event"]) for i in ids] == [(a, 0), (b, 0), (c, 1)]


async def test_an_activity_may_leave_tools_out(server: ServerProcess):
    tool = unique_tool()
    [event_id] = await publish_ok(server.url, activity(tool))
    assert event_id["tool"] == tool


def error_of(response: httpx.Response) -> dict[str, str]:
    """The error of an API response, checked to have the contract's shape: the same
    three keys every time (`field` is null when the error is not about one)."""
    assert response.headers["content-type"] == "application/json"
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"code", "message", "field"}, error
    return error


async def test_unknown_api_paths_and_methods_answer_in_the_error_shape(server: ServerProcess):
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        missing = await http.get("/api/tool/flask/events")
        assert missing.status_code == 404
        assert error_of(missing) == {"code": "not_found", "message": "Not Found", "field": None}
        wrong = await http.get("/api/events")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert error_of(wrong)["code"] == "method_not_allowed"
        page = await http.get("/no-such-page")  # outside the API: Starlette's own answer
        assert (page.status_code, page.text) == (404, "Not Found")


async def test_bad_json_is_400(server: ServerProcess):
    response = await publish(server.url, b'{"kind": "story",')
    assert response.status_code == 400 and error_of(response)["code"] == "bad_json"


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_a_missing_or_wrong_key_is_401(server: ServerProcess, key: str | None):
    tool = unique_tool()
    response = await publish(server.url, story([tool]), key=key)
    assert response.status_code == 401 and error_of(response)["code"] == "unauthorized"
    assert await titles(server, tool) == []


async def test_without_configured_keys_http_publishing_is_off(start_server: StartServer):
    server = start_server({"LIVEFEED_PUBLISH_KEYS": ""})
    response = await publish(server.url, story(["flask"]))
    assert response.status_code == 401
    assert "LIVEFEED_PUBLISH_KEYS" in error_of(response)["message"]


async def test_a_body_over_1_mib_is_413(server: ServerProcess):
    tool = unique_tool()
    big = {"events": [story([tool], body="x" * 4000)] * 300}  # ~1.2 MB, under 1000 events
    response = await publish(server.url, big)
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"
    assert await titles(server, tool) == []


async def test_a_body_over_1_mib_without_content_length_is_413(server: ServerProcess):
    async def chunks():  # a generator body is sent chunked, with no Content-Length
        yield b'{"events": ['
        for _ in range(300):
            yield orjson.dumps(story(["flask"], body="x" * 4000)) + b","
        yield b"]}"

    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        response = await http.post(
            "/api/events",
            content=chunks(),
            headers={"Authorization": "Bearer test-publish-key"},
        )
    assert response.status_code == 413


async def test_more_than_1000_events_is_413(server: ServerProcess):
    tool = unique_tool()
    response = await publish(server.url, {"events": [activity(tool)] * 1001})
    assert response.status_code == 413 and error_of(response)["field"] == "events"


async def test_an_invalid_event_is_422_with_its_field(server: ServerProcess):
    response = await publish(server.url, story(["flask"], title=""))
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_event"
    assert error_of(response)["field"] == "data.title"
    response = await publish(server.url, {**story(["flask"]), "colour": "red"})
    assert error_of(response)["field"] == "colour"


async def test_a_batch_with_one_bad_event_stores_and_delivers_nothing(server: ServerProcess):
    tool, marker = unique_tool(), unique_tool()
    client = await WsClient.subscribed(server.ws_url, f"{tool},{marker}")
    events = [story([tool], f"ok{i}") for i in range(5)]
    events.insert(3, story([tool], url="ftp://nope"))
    response = await publish(server.url, {"events": events})
    assert response.status_code == 422
    assert error_of(response)["field"] == "events[3].data.url"
    await publish_ok(server.url, story([marker], "marker"))
    [event] = await client.events(1)
    assert event["tool"] == marker  # nothing of the refused batch was delivered first
    assert await titles(server, tool) == []
    await client.close()


async def test_over_the_publish_rate_is_429_with_retry_after(start_server: StartServer):
    server = start_server(
        {"LIVEFEED_PUBLISH_RATE": "0.5", "LIVEFEED_PUBLISH_BURST": "3", "LIVEFEED_MAX_BATCH": "3"}
    )
    tool = unique_tool()
    await publish_ok(server.url, {"events": [activity(tool)] * 3})
    response = await publish(server.url, activity(tool))
    assert response.status_code == 429 and error_of(response)["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1
    assert len((await history(server, tool)).json()["events"]) == 3


async def test_a_batch_costing_more_than_the_burst_is_taken_from_a_full_bucket(
    start_server: StartServer,
):
    # 501 stories on 2 tools: 1002 tool events against a burst of 1000, a batch the
    # contract allows (<= 1000 events), so never a 413 nor a 429 for ever.
    server = start_server({"LIVEFEED_PUBLISH_BURST": "1000", "LIVEFEED_PUBLISH_RATE": "0.01"})
    tool, other = unique_tool(), unique_tool()
    batch = {"events": [story([tool, other])] * 501}
    assert len(await publish_ok(server.url, batch)) == 1002
    # The bucket is now 2 in debt: the next request waits for the debt and its own cost,
    # 3 tokens at 0.01 a second (less the time this test took to get here).
    response = await publish(server.url, story([tool]))
    assert response.status_code == 429 and error_of(response)["code"] == "rate_limited"
    assert 250 <= int(response.headers["retry-after"]) <= 300
    # The big batch again: told to wait for a full bucket (1002 tokens).
    response = await publish(server.url, batch)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 100_000


async def test_a_publisher_that_hangs_up_mid_body_publishes_nothing_quietly(
    start_server: StartServer,
):
    server = start_server()  # its stop fails the test if the server logged a traceback
    tool = unique_tool()
    body = orjson.dumps(story([tool], "never finished"))
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + PUBLISH_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body[:-5]
    )
    await writer.drain()
    writer.close()

    async def refused() -> bool:
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            text = (await http.get(f"{server.url}/metrics")).text
        return 'livefeed_publish_requests_total{status="400"} 1.0' in text

    await async_wait_until(refused, what="the server to count the broken request")
    assert await titles(server, tool) == []


async def test_the_broker_down_is_503_and_nothing_is_stored(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    server = start_server(redis_env(own_redis, prefix))
    tool = unique_tool()
    own_redis.stop()
    response = await publish(server.url, {"events": [story([tool], "lost?")] * 3})
    assert response.status_code == 503 and error_of(response)["code"] == "unavailable"
    assert (await history(server, tool)).status_code == 503
    own_redis.start()

    async def history_answers() -> bool:
        return (await history(server, tool)).status_code == 200

    await async_wait_until(history_answers, what="history to answer after Redis is back")
    assert await titles(server, tool) == []


async def test_a_publish_whose_redis_reply_is_lost_is_202_with_the_ids_it_was_stored_with(
    start_server: StartServer, redis_relay: Relay, prefix: str
):
    server = start_server({"LIVEFEED_REDIS_URL": redis_relay.url, "LIVEFEED_REDIS_PREFIX": prefix})
    tool = unique_tool()
    client = await WsClient.subscribed(server.ws_url, tool)
    await publish_ok(server.url, story([tool], "warm-up"))  # from now on EVALSHA runs it
    redis_relay.lose_reply_to(PUBLISH_SHA)
    async with httpx.AsyncClient(timeout=3 * TIMEOUT) as http:  # the server waits 5 s first
        response = await publish(server.url, story([tool], "reply lost"), http=http)
    assert redis_relay.reply_lost.is_set()
    assert response.status_code == 202, response.text
    [lost] = response.json()["events"]
    [marker] = await publish_ok(server.url, story([tool], "marker"))
    received = [e["id"] for e in await client.events(3)]
    assert received[1:] == [lost["id"], marker["id"]]  # delivered once, with that id
    assert await titles(server, tool) == ["warm-up", "reply lost", "marker"]
    await client.close()


async def test_a_batch_meeting_a_redis_key_of_the_wrong_type_is_500_and_stores_nothing(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    server = start_server(redis_env(redis_server, prefix))
    good, bad = unique_tool(), unique_tool()
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.set(f"{prefix}s:{bad}", "not a stream")
    response = await publish(server.url, {"events": [story([good]), story([bad])]})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "broker_error" and f"{prefix}s:{bad}" in error["message"]
    assert await titles(server, good) == []
    await admin.aclose()


async def test_idempotency_keys_work_across_processes(
    start_server: StartServer, redis_server: RedisServer, prefix: str
):
    one = start_server(redis_env(redis_server, prefix))
    two = start_server(redis_env(redis_server, prefix))
    tool = unique_tool()
    document = {**story([tool], "once"), "idempotency_key": "order-42"}
    first = await publish_ok(one.url, document)
    again = await publish_ok(two.url, document)
    assert again == first
    assert await titles(one, tool) == ["once"]


async def test_history_limit_since_and_recovered(server: ServerProcess):
    tool = unique_tool()
    ids = [(await publish_ok(server.url, story([tool], f"s{i}")))[0]["id"] for i in range(25)]
    default = (await history(server, tool)).json()
    assert default["tool"] == tool and [e["id"] for e in default["events"]] == ids[-20:]
    assert "recovered" not in default
    assert [e["id"] for e in (await history(server, tool, limit="3")).json()["events"]] == (
        ids[-3:]
    )
    after = (await history(server, tool, since=ids[10], limit="5")).json()
    assert [e["id"] for e in after["events"]] == ids[11:16] and after["recovered"] is True


@pytest.mark.parametrize(
    ("path", "params", "code", "field"),
    [
        ("/api/tools/Not%20A%20Tool/events", {}, "invalid_tool", "tool"),
        ("/api/tools/flask/events", {"limit": "101"}, "invalid_query", "limit"),
        ("/api/tools/flask/events", {"limit": "0"}, "invalid_query", "limit"),
        ("/api/tools/flask/events", {"limit": "ten"}, "invalid_query", "limit"),
        ("/api/tools/flask/events", {"limit": "\u00b2"}, "invalid_query", "limit"),
        ("/api/tools/flask/events", {"limit": "0" * 4300 + "5"}, "invalid_query", "limit"),
        ("/api/tools/flask/events", {"since": "\u0661-1"}, "invalid_query", "since"),
        ("/api/tools/flask/events", {"since": f"{2**64}-0"}, "invalid_query", "since"),
        ("/api/tools/flask/events", {"since": "yesterday"}, "invalid_query", "since"),
    ],
)
async def test_history_refuses_bad_queries(
    server: ServerProcess, path: str, params: dict[str, str], code: str, field: str
):
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        response = await http.get(path, params=params)
    assert response.status_code == 400
    assert error_of(response)["code"] == code and error_of(response)["field"] == field


async def test_the_firehose_has_its_own_history(server: ServerProcess):
    tool = unique_tool()
    [tool_id] = await publish_ok(server.url, story([tool], "everywhere"))
    events = (await history(server, "%2A", limit="100")).json()["events"]
    ours = [e for e in events if e["tool"] == tool]
    assert len(ours) == 1 and ours[0]["channel"] == "*"
    assert ours[0]["data"]["title"] == "everywhere"
    assert tool_id["tool"] == tool


async def test_health_and_readiness(server: ServerProcess):
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200


async def test_readiness_follows_the_broker(
    start_server: StartServer, own_redis: RedisServer, prefix: str
):
    server = start_server(redis_env(own_redis, prefix))
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        assert (await http.get("/readyz")).status_code == 200
        own_redis.stop()
        assert (await http.get("/readyz")).status_code == 503
        assert (await http.get("/healthz")).status_code == 200
        own_redis.start()

        async def ready() -> bool:
            return (await http.get("/readyz")).status_code == 200

        await async_wait_until(ready, what="readyz after Redis is back")
