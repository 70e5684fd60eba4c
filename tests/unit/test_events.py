"""Publish validation: what is accepted, and the exact field of each refusal."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from livefeed.errors import BadJson, InvalidEvent, TooLarge
from livefeed.events import MAX_DATA_BYTES, parse_body, prepare


def story(**data: Any) -> dict[str, Any]:
    return {
        "kind": "story",
        "tools": ["flask"],
        "data": {"author": {"handle": "laura_garcia"}, "title": "Hello", **data},
    }


def activity(**data: Any) -> dict[str, Any]:
    return {
        "kind": "activity",
        "data": {
            "actor": {"handle": "klodnitsky"},
            "verb": "started_using",
            "tool": "terraform",
            **data,
        },
    }


def refusal(document: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        prepare(document)
    return caught.value


def test_a_full_story_is_accepted_with_defaults_filled_in():
    batch = prepare(
        story(
            body="b",
            url="https://example.com/x",
            tags=["a"],
            trending=True,
            author={
                "handle": "laura_garcia",
                "name": "Laura",
                "title": "Software Developer, RELIANOID",
                "avatar_url": "http://example.com/a.png",
            },
        )
    )
    [event] = batch.events
    assert event.kind == "story" and event.tools == ("flask",)
    data = orjson.loads(event.data)
    assert data["trending"] is True and data["author"]["name"] == "Laura"
    minimal = orjson.loads(prepare(story()).events[0].data)
    assert minimal == {
        "author": {"handle": "laura_garcia", "name": None, "title": None, "avatar_url": None},
        "title": "Hello",
        "body": "",
        "url": None,
        "tags": [],
        "trending": False,
    }


def test_an_activity_goes_to_its_data_tool():
    [event] = prepare(activity()).events
    assert event.kind == "activity" and event.tools == ("terraform",)
    assert prepare({**activity(), "tools": ["terraform"]}).events[0].tools == ("terraform",)
    assert refusal({**activity(), "tools": ["flask"]}).field == "tools"


def test_what_the_contract_allows_is_accepted_as_sent():
    for verb in ["started_using", "started-using", "v2.upgraded", "2fa_enabled", "x" * 64]:
        [event] = prepare(activity(verb=verb)).events
        assert orjson.loads(event.data)["verb"] == verb
    tags = ["", "x" * 50] + ["t"] * 18  # 20 strings of <= 50 chars; the contract sets no minimum
    assert orjson.loads(prepare(story(tags=tags)).events[0].data)["tags"] == tags


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (story(title=""), "data.title"),
        (story(title="x" * 301), "data.title"),
        (story(body="x" * 5001), "data.body"),
        (story(url="javascript:alert(1)"), "data.url"),
        (story(url="ftp://example.com/"), "data.url"),
        (story(url="https://"), "data.url"),
        (story(tags=["x"] * 21), "data.tags"),
        (story(tags=["x" * 51]), "data.tags[0]"),
        (story(trending="yes"), "data.trending"),
        (story(author={"handle": "bad handle"}), "data.author.handle"),
        (story(author={"handle": "x" * 65}), "data.author.handle"),
        (story(author={"handle": "ok\n"}), "data.author.handle"),
        (story(author={"handle": "ok", "avatar_url": "data:x"}), "data.author.avatar_url"),
        (story(author={"name": "No handle"}), "data.author.handle"),
        (story(surprise=1), "data.surprise"),
        (story(author={"handle": "ok", "email": "a@b"}), "data.author.email"),
        ({**story(), "tools": []}, "tools"),
        ({**story(), "tools": ["Flask"]}, "tools[0]"),
        ({**story(), "tools": ["*"]}, "tools[0]"),
        ({**story(), "tools": ["flask", "flask"]}, "tools[1]"),
        ({**story(), "extra": True}, "extra"),
        ({**story(), "idempotency_key": "k" * 65}, "idempotency_key"),
        ({"tools": ["flask"], "data": {}}, "kind"),
        ({**story(), "kind": "poll"}, "kind"),
        (activity(verb="Started Using"), "data.verb"),
        (activity(verb="_started"), "data.verb"),
        (activity(tool="no spaces"), "data.tool"),
        (activity(actor={"handle": "a", "title": "x"}), "data.actor.title"),
        ({"kind": "story", "tools": ["flask"]}, "data"),
        # Lone surrogates: only Python callers (the Publisher) can pass them.
        (story(title="\ud800"), "data.title"),
        (story(tags=["ok", "\udfff"]), "data.tags[1]"),
        (story(author={"handle": "ok", "name": "a\ud800b"}), "data.author.name"),
        ({**story(), "idempotency_key": "\ud800"}, "idempotency_key"),
    ],
)
def test_each_refusal_names_the_offending_field(document: dict[str, Any], field: str):
    assert refusal(document).field == field


def test_fields_inside_a_batch_carry_the_event_index():
    events = [story(), story(), story(), story(title=""), story()]
    assert refusal({"events": events}).field == "events[3].data.title"
    assert refusal({"events": [story(), {**story(), "tools": ["flask", "flask"]}]}).field == (
        "events[1].tools[1]"
    )
    assert refusal({"events": [story()], "also": 1}).field == "also"
    assert refusal({"events": []}).field == "events"
    assert refusal({"events": "nope"}).field == "events"
    assert refusal({"events": [story(), story(title="\ud800")]}).field == "events[1].data.title"


def test_a_batch_is_refused_whole_when_one_event_is_bad():
    with pytest.raises(InvalidEvent):
        prepare({"events": [story(), story(), activity(verb="")]})


def test_batch_size_limit_is_a_413():
    with pytest.raises(TooLarge) as caught:
        prepare({"events": [story()] * 1001})
    assert caught.value.field == "events"
    assert len(prepare({"events": [story()] * 1000}).events) == 1000
    with pytest.raises(TooLarge):
        prepare({"events": [story()] * 11}, max_batch=10)


def _largest_story() -> dict[str, Any]:
    """Every field at its length limit, in characters that encode as 6-byte escapes."""
    c = "\x01"
    url = "https://example.com/" + c * 2028
    return story(
        title=c * 300,
        body=c * 5000,
        tags=[c * 50] * 20,
        url=url,
        author={"handle": "h", "name": c * 100, "title": c * 200, "avatar_url": url},
    )


def test_the_field_limits_keep_event_data_under_64_kib():
    assert 60_000 < len(prepare(_largest_story()).events[0].data) < MAX_DATA_BYTES


def test_event_data_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("livefeed.events.MAX_DATA_BYTES", 10_000)
    error = refusal(_largest_story())
    assert error.field == "data" and "10000" in error.message


def test_a_body_that_is_not_json_or_not_an_object():
    with pytest.raises(BadJson):
        parse_body(b"{not json")
    with pytest.raises(InvalidEvent) as caught:
        parse_body(b"[1, 2]")
    assert caught.value.field is None


def test_types_are_strict():
    assert refusal(story(title=5)).field == "data.title"
    assert refusal({**story(), "tools": "flask"}).field == "tools"


def test_error_json_shape():
    error = refusal(story(title=""))
    assert error.to_json() == {
        "error": {"code": "invalid_event", "message": error.message, "field": "data.title"}
    }
    assert "length" in error.message
