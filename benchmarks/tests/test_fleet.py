"""Where the latency probes sit among the subscribers, and when the others wake."""

from __future__ import annotations

import pytest

from benchmarks.fleet import Endpoint, Fleet, probe_indices, wake_threshold
from benchmarks.wsclient import Dialect


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


def test_probes_sit_at_the_same_places_counted_from_either_end() -> None:
    """A server that writes newest first (Nchan) is timed where one that writes in
    connection order is: at the middles of five slices, 10 to 90 %."""
    forward = sorted(probe_indices(1000, 5))
    backward = sorted(999 - index for index in forward)
    assert all(abs(a - b) <= 10 for a, b in zip(forward, backward, strict=True))
    assert forward[0] >= 90 and forward[-1] <= 910


def test_the_end_connections_are_kept_apart_and_give_the_head_of_the_fan_out() -> None:
    fleet = Fleet(
        [Endpoint(1, lambda tool: "/")], ["a"], Dialect.PLAIN, acks=True, size=100, probes=5
    )
    assert tuple(fleet.end_latencies) == (0, 99)
    fleet.latencies += [(0.004, 0.005)]
    fleet.end_latencies[0] += [(0.009, 0.009)] * 10  # written last by this server
    fleet.end_latencies[99] += [(0.001, 0.002)] * 9 + [(0.003, 0.003)]  # written first
    arrival, read, head = fleet.take_latencies()
    assert arrival == [0.004] and read == [0.005]  # the spread probes' figures alone
    assert head == 0.003  # the lower p99 of the two ends
    assert fleet.take_latencies() == ([], [], None)  # taken: the next step starts afresh


def test_a_fleet_without_probes_has_no_end_probes_either() -> None:
    fleet = Fleet(
        [Endpoint(1, lambda tool: "/")], ["a"], Dialect.PLAIN, acks=True, size=100, probes=0
    )
    assert fleet.probe_indices == frozenset() and fleet.end_latencies == {}
