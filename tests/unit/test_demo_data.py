"""The demo stream: every request is valid under contract v1, and the stream looks alive.

The checks are written out here on purpose rather than borrowed from livefeed.events, so this
file pins the contract on its own (see /work/shared/CONTRACT.md, "Events").
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from typing import Any

from livefeed.demo_data import TOOL_NAMES, TOOLS, demo_requests

TOOL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
HANDLE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SAMPLE = 2000


def sample(seed: int = 1, count: int = SAMPLE) -> list[dict[str, Any]]:
    return list(itertools.islice(demo_requests(random.Random(seed)), count))


def check_person(person: Any, fields: set[str]) -> None:
    assert isinstance(person, dict)
    assert set(person) <= fields
    assert HANDLE_RE.match(person["handle"])
    assert all(isinstance(person[key], str) and person[key] for key in person)


def check_story(request: dict[str, Any]) -> None:
    assert set(request) == {"kind", "tools", "data"}
    tools = request["tools"]
    assert isinstance(tools, list)
    assert 1 <= len(tools) <= 4
    assert len(set(tools)) == len(tools)
    data = request["data"]
    assert set(data) == {"author", "title", "body", "url", "tags", "trending"}
    check_person(data["author"], {"handle", "name", "title"})
    assert {"handle", "name", "title"} == set(data["author"])
    assert isinstance(data["title"], str)
    assert 1 <= len(data["title"]) <= 300
    assert "{" not in data["title"]
    assert isinstance(data["body"], str)
    assert 0 < len(data["body"]) <= 600
    assert "{" not in data["body"]
    assert 1 <= data["body"].count(". ") + 1 <= 3  # one to three sentences
    assert re.match(r"^https://[a-z0-9.-]+\.example/\S+$", data["url"])
    tags = data["tags"]
    assert isinstance(tags, list)
    assert 1 <= len(tags) <= 5
    assert all(isinstance(tag, str) and 0 < len(tag) <= 50 for tag in tags)
    assert isinstance(data["trending"], bool)


def check_activity(request: dict[str, Any]) -> None:
    assert set(request) == {"kind", "data"}
    data = request["data"]
    assert set(data) == {"actor", "verb", "tool"}
    check_person(data["actor"], {"handle", "name"})
    assert TOOL_RE.match(data["verb"])  # a slug, as the contract asks
    assert data["tool"] in TOOLS


def test_tool_table() -> None:
    assert len(TOOLS) >= 24
    assert len(set(TOOLS)) == len(TOOLS)
    assert set(TOOLS) == set(TOOL_NAMES)
    assert all(TOOL_RE.match(tool) for tool in TOOLS)
    assert all(name.strip() == name and name for name in TOOL_NAMES.values())
    assert TOOL_NAMES["amazon-web-services"] == "Amazon Web Services"


def test_every_request_is_valid() -> None:
    for request in sample():
        assert request["kind"] in {"story", "activity"}
        if request["kind"] == "story":
            check_story(request)
            assert all(TOOL_RE.match(tool) and tool in TOOLS for tool in request["tools"])
        else:
            check_activity(request)
        assert len(json.dumps(request["data"]).encode()) <= 64 * 1024


def test_stream_looks_alive() -> None:
    requests = sample()
    kinds = Counter(request["kind"] for request in requests)
    assert 0.18 <= kinds["story"] / SAMPLE <= 0.32  # about one story per three activities
    stories = [r for r in requests if r["kind"] == "story"]
    activities = [r["data"] for r in requests if r["kind"] == "activity"]
    seen = {tool for r in stories for tool in r["tools"]} | {a["tool"] for a in activities}
    assert len(seen) >= 20
    assert any(len(r["tools"]) >= 2 for r in stories)
    assert any(len(r["tools"]) >= 3 for r in stories)
    assert len({r["data"]["title"] for r in stories}) >= 100
    assert len({r["data"]["author"]["handle"] for r in stories}) >= 20
    assert len({a["verb"] for a in activities}) >= 4
    trending = sum(r["data"]["trending"] for r in stories) / len(stories)
    assert 0.08 <= trending <= 0.25


def test_bursts_of_related_tools() -> None:
    requests = sample()
    longest = 0
    run: list[dict[str, Any]] = []
    for request in requests:
        data = request["data"]
        if (
            request["kind"] == "activity"
            and data["verb"] == "started_using"
            and run
            and run[-1]["actor"]["handle"] == data["actor"]["handle"]
            and data["tool"] not in {a["tool"] for a in run}
        ):
            run.append(data)
        else:
            run = [data] if request["kind"] == "activity" else []
        longest = max(longest, len(run))
    assert longest >= 3


def test_same_seed_same_stream() -> None:
    assert sample(seed=42) == sample(seed=42)
    assert sample(seed=42, count=200) != sample(seed=43, count=200)


def test_requests_share_no_mutable_state() -> None:
    """A caller may change what it got (add an idempotency_key, say) without harm."""
    stream = demo_requests(random.Random(5))
    for request in itertools.islice(stream, 500):
        (check_story if request["kind"] == "story" else check_activity)(request)
        for value in request["data"].values():
            if isinstance(value, dict | list):
                value.clear()
        request.get("tools", []).clear()
    assert sample(seed=5, count=500) == sample(seed=5, count=500)
