"""Id order, the recoverability rule, the replay/live merge, SSE cursors."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from livefeed.history import (
    IdKey,
    decode_cursor,
    encode_cursor,
    format_id,
    is_recoverable,
    merge,
    parse_id,
)


@dataclass
class E:
    key: IdKey


def test_ids_parse_to_numeric_pairs_and_back():
    assert parse_id("1764040000000-3") == (1764040000000, 3)
    assert parse_id("9-0") < parse_id("10-0")  # type: ignore[operator]
    assert format_id((10, 2)) == "10-2"
    other_digits = ["\u0661-1", "1-\uff11"]  # digits to int(), not ASCII ones
    for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", " 1-1", "1-1\n", None, 5, *other_digits]:
        assert parse_id(bad) is None
    # Redis stream ids: two unsigned 64-bit numbers, and nothing follows the largest.
    top = 2**64 - 1
    assert parse_id(f"{top}-0") == (top, 0)
    for beyond in [f"{top + 1}-0", f"0-{top + 1}", f"{top}-{top}"]:
        assert parse_id(beyond) is None


@pytest.mark.parametrize(
    ("since", "first", "last", "trimmed", "expected"),
    [
        ((5, 0), (3, 0), (9, 0), (2, 0), True),  # inside kept history
        ((9, 0), (3, 0), (9, 0), (2, 0), True),  # at the newest event
        ((2, 0), (3, 0), (9, 0), (2, 0), True),  # the newest trimmed: nothing after it lost
        ((1, 0), (3, 0), (9, 0), (2, 0), False),  # older than that: events were trimmed
        ((10, 0), (3, 0), (9, 0), (2, 0), False),  # never issued (from the future)
        ((2, 5), (3, 0), (9, 0), (0, 0), False),  # before history, nothing trimmed: unknown
        ((5, 0), None, None, (0, 0), False),  # no history at all
        ((0, 0), None, None, (0, 0), True),  # from the beginning, nothing to lose
        ((0, 0), (3, 0), (9, 0), (0, 0), True),
        ((0, 0), (3, 0), (9, 0), (2, 0), False),
    ],
)
def test_recoverability(since, first, last, trimmed, expected):
    assert is_recoverable(since, first, last, trimmed) is expected


def test_merge_replays_then_adds_only_newer_live_events():
    replay = [E((1, 0)), E((2, 0)), E((3, 0))]
    buffered = [E((2, 0)), E((3, 0)), E((4, 0)), E((5, 0))]
    assert [e.key for e in merge(replay, buffered)] == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]


def test_merge_drops_what_the_client_already_has():
    assert [e.key for e in merge([], [E((1, 0)), E((2, 0))], after=(1, 0))] == [(2, 0)]
    assert merge([], [E((1, 0))], after=(1, 0)) == []
    assert [e.key for e in merge([E((3, 0))], [], after=(1, 0))] == [(3, 0)]


def test_merge_output_is_strictly_increasing_even_from_disordered_input():
    out = merge([E((1, 0)), E((1, 0))], [E((0, 9)), E((1, 1))])
    assert [e.key for e in out] == [(1, 0), (1, 1)]


def test_cursors_round_trip_and_refuse_garbage():
    positions = {"flask": "1-0", "*": "7-2", "grafana-loki": "3-1"}
    assert decode_cursor(encode_cursor(positions)) == positions
    assert decode_cursor("") == {}
    for bad in ["flask", "flask:", "Flask:1-0", "flask:abc", "flask:1-0,,", ":1-0"]:
        with pytest.raises(ValueError):
            decode_cursor(bad)
    with pytest.raises(ValueError):
        decode_cursor(",".join(f"t{i}:1-0" for i in range(101)))
