"""Where the latency probes sit among the subscribers, and when the others wake."""

from __future__ import annotations

import pytest

from benchmarks.fleet import probe_indices, wake_threshold


def test_probes_spread_over_the_whole_connection_order() -> None:
    probes = sorted(probe_indices(1000, 5))
    assert len(probes) == 5
    assert probes[0] < 200 and probes[-1] >= 800  # head and tail of a fan-out both timed


def test_probes_cover_distinct_tools_and_every_server() -> None:
    probes = probe_indices(5000, 50)  # many-channels: tools and servers are round robin
    assert len({index % 500 for index in probes}) == 50
    assert {index % 2 for index in probes} == {0, 1}
    assert max(probes) < 5000


def test_too_few_connections_to_spread_take_the_first() -> None:
    assert probe_indices(20, 5) == frozenset(range(5))
    assert probe_indices(3, 5) == frozenset(range(3))


def test_counting_connections_wake_at_staggered_thresholds() -> None:
    thresholds = [wake_threshold(index, 1000, 16384) for index in range(1000)]
    assert min(thresholds) == 8192 and max(thresholds) < 3 * 8192
    # ~350-byte events: the connections' wake-ups spread over ~47 distinct events
    assert len({threshold // 350 for threshold in thresholds}) >= 45
    assert sum(thresholds) / 1000 == pytest.approx(16384, rel=0.01)


def test_a_threshold_of_one_byte_wakes_everyone() -> None:
    assert {wake_threshold(index, 1000, 1) for index in range(1000)} == {1}
