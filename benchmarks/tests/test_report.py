"""How repeated reference steps are combined, and how the targets are judged."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmarks.report import render
from benchmarks.scenarios import _median_step, resummarise
from benchmarks.session import Step


def _step(us: float, p99: float, valid: bool = True) -> Step:
    return Step(target=20_000, rate=20, us_per_delivery=us, p50=p99 / 4, p99=p99, valid=valid)


def test_the_median_run_by_cost_with_each_latency_the_median_of_all_runs() -> None:
    runs = [_step(9.0, 0.002), _step(7.0, 0.009), _step(8.0, 0.004)]
    median = _median_step(runs)
    assert median.us_per_delivery == 8.0
    assert median.p99 == 0.004
    assert median.p50 == 0.001


def test_the_kernels_part_is_the_median_runs_cost_at_the_share_of_all_runs() -> None:
    runs = [
        replace(_step(9.0, 0.002), kernel_us_per_delivery=6.0),
        replace(_step(7.0, 0.009), kernel_us_per_delivery=3.0),
        replace(_step(8.0, 0.004), kernel_us_per_delivery=3.0),
    ]
    # 12 of 24 us were the kernel's: half of the median run's 8.0
    assert _median_step(runs).kernel_us_per_delivery == 4.0


def test_runs_the_load_side_limited_do_not_count() -> None:
    runs = [_step(3.0, 0.001, valid=False), _step(7.0, 0.002), _step(9.0, 0.003)]
    assert _median_step(runs).us_per_delivery == 7.0  # the lower of the two valid runs


def _section(page: str, title: str) -> str:
    """The part of a rendered RESULTS.md under the heading that starts with ``title``."""
    return page.split(f"## {title}")[1].split("\n## ")[0]


def _table_rows(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("|")]


def _cells_per_row(section: str) -> set[int]:
    """How many cell borders each row of the section's table has (one value: all alike)."""
    return {line.count("|") for line in _table_rows(section)}


def test_a_single_run_is_returned_as_it_is() -> None:
    only = _step(7.0, 0.002)
    assert _median_step([only]) is only


def _ladder_result(
    best: float,
    us: float,
    p99: float,
    top: bool = False,
    head: float | None = None,
    kernel: float | None = None,
) -> dict[str, Any]:
    reference = {"us_per_delivery": us, "kernel_us_per_delivery": kernel}
    return {
        "best": {"per_second": best, "p99": 0.02},
        "reference": {**reference, "p50": 0.001, "p99": p99, "p99_head": head},
        "top_reached": top,
        "steps": [],
    }


def test_the_targets_table_says_which_targets_this_run_met() -> None:
    results = {
        "meta": {},
        "peers": {
            "livefeed": {
                "label": "livefeed",
                "scenarios": {
                    "fanout-1000": _ladder_result(300_000, 7.0, 0.003, top=True, head=0.0009),
                    "many-channels": _ladder_result(40_000, 21.0, 0.003, kernel=9.8),
                    "idle-memory": {
                        "kib_per_connection": 7.9,
                        "rss_kib_per_connection": 8.0,
                        "pss_before_kib": 30_000,
                        "pss_after_kib": 110_000,
                        "live": 10_000,
                        "connect": {"rate": 1000},
                        "seconds": 14,
                    },
                },
            },
            "nchan": {
                "label": "Nchan",
                "scenarios": {
                    "fanout-1000": _ladder_result(300_000, 6.0, 0.01, top=True, head=0.0014),
                    "many-channels": _ladder_result(40_000, 15.0, 0.003),
                },
            },
            "socketio-node": {
                "label": "Socket.IO",
                "scenarios": {"fanout-1000": _ladder_result(80_000, 15.0, 0.007)},
            },
        },
    }
    table = _section(render(results), "Targets")
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "|" in line}
    assert rows["highest clean rate ≥ Nchan's"].endswith("| met |")
    assert "3.75x" in rows["highest clean rate ≥ 1.5x Socket.IO's"]
    assert rows["CPU per delivery ≤ Nchan's @ 20,000/s"].endswith("| **missed** |")
    p99 = rows["p99 ≤ 5 ms @ 20,000/s"]
    assert "3.0 ms (head of the fan-out: 0.9 ms; Nchan 10.0, head 1.4)" in p99
    assert p99.endswith("| met |")  # judged on the spread probes, not the head
    assert rows["≤ 10 KB per idle subscribed connection"].endswith("| met |")
    many = rows["many channels ≤ 1.3x one channel, CPU per delivery"]
    assert "3.00x" in many and "Nchan's own: 2.50x" in many and many.endswith("| **missed** |")
    assert "livefeed's kernel time alone: 9.8 µs = 1.40x" in many


def test_the_cpu_column_gives_the_kernels_part_when_it_was_measured() -> None:
    own = _ladder_result(60_000, 9.7, 0.001, kernel=5.4)
    older = _ladder_result(40_000, 15.3, 0.001)
    peers = {
        "livefeed": {"label": "livefeed", "scenarios": {"many-channels": own}},
        "nchan": {"label": "Nchan", "scenarios": {"many-channels": older}},
    }
    table = _section(render({"meta": {}, "peers": peers}), "Many channels")
    assert "CPU µs/delivery (kernel) @" in table
    rows = {line.split(" | ")[0]: line.split(" | ") for line in table.splitlines()}
    assert rows["| livefeed"][3] == "9.7 (5.4)"
    assert rows["| Nchan"][3] == "15.3"  # recorded before the split was measured


def _rung(target: int, p99: float, loaded: bool = False, verdict: str = "clean") -> dict:
    step = Step(target, target / 1000, per_second=target, p99=p99, loaded=loaded, verdict=verdict)
    return step.as_dict()


def test_the_latency_at_the_top_is_taken_below_a_loaded_step() -> None:
    fanout = _ladder_result(250_000, 7.0, 0.003)
    fanout["steps"] = [
        _rung(200_000, 0.03),
        _rung(250_000, 0.3, loaded=True),
        _rung(300_000, 1.2, loaded=True, verdict="load core saturated"),
    ]
    fanout["best"] = fanout["steps"][1]
    livefeed = {"label": "livefeed", "scenarios": {"fanout-1000": fanout}}
    lines = render({"meta": {}, "peers": {"livefeed": livefeed}}).splitlines()
    row = next(line for line in lines if line.startswith("| p99 ≤ 50 ms at the highest"))
    assert "30.0 ms at 200,000/s; 300.0 ms at 250,000/s, a loaded step | met" in row


def test_each_peers_row_says_whether_its_idle_cores_polled_or_halted() -> None:
    def peer(label: str, idle_cores: str) -> dict[str, Any]:
        return {"label": label, "mode": "full", "idle_cores": idle_cores, "scenarios": {}}

    results = {
        "meta": {},
        "peers": {
            "livefeed": peer("livefeed", "polling, not halted (/dev/cpu_dma_latency held at 0)"),
            "nchan": peer("Nchan", "kernel default, halting (no poll state on cpu0)"),
        },
    }
    rows = {line.split(" | ")[0]: line for line in render(results).splitlines()}
    assert "(full, idle cores polling)" in rows["| livefeed"]
    assert "(full, idle cores halting)" in rows["| Nchan"]


def test_recorded_steps_are_summarised_again_by_todays_rules() -> None:
    ladder = {"subscribers": 1000, "tools": 1, "steps": [20_000, 40_000], "reference": 20_000}
    steps = [
        _rung(20_000, 0.004) | {"us_per_delivery": 4.0, "kernel_us_per_delivery": 4.0},
        _rung(20_000, 0.005) | {"us_per_delivery": 5.0, "kernel_us_per_delivery": 2.0},
        _rung(20_000, 0.006) | {"us_per_delivery": 6.0, "kernel_us_per_delivery": 3.0},
        _rung(40_000, 0.007),
    ]
    # as recorded before the kernel's part was pooled over the reference runs
    result = {"ladder": ladder, "steps": steps, "reference": steps[1], "best": None}
    results = {"meta": {}, "peers": {"livefeed": {"scenarios": {"fanout-1000": result}}}}
    resummarise(results)
    assert result["reference"]["kernel_us_per_delivery"] == 3.0  # 9 of 15 us, of 5.0
    assert result["best"]["target"] == 40_000 and result["top_reached"]


def test_a_peer_that_failed_or_did_not_run_fills_every_column_of_each_table() -> None:
    failed = {name: {"error": "server | exited"} for name in
              ("fanout-1000", "many-channels", "idle-memory", "connect-rate")}  # fmt: skip
    results = {
        "meta": {},
        "peers": {
            "livefeed": {"label": "livefeed", "scenarios": failed},
            "nchan": {"label": "Nchan", "missing": "nginx not installed", "scenarios": {}},
        },
    }
    page = render(results)
    titles = ("Fan-out: 1,000", "Many channels", "Idle memory", "Connect rate")
    tables = [part for part in page.split("\n## ") if part.startswith(titles)]
    assert len(tables) == 4
    for table in tables:
        assert len(_cells_per_row(table)) == 1, table
        assert any("error: server" in row for row in _table_rows(table))


def test_only_a_fan_out_to_one_tool_has_a_column_for_the_head_of_the_fan_out() -> None:
    def result(tools: int) -> dict[str, Any]:
        ladder = {"subscribers": 1000, "tools": tools, "steps": [20_000], "reference": 20_000}
        return {**_ladder_result(40_000, 5.0, 0.004, head=0.0011), "ladder": ladder}

    scenarios = {"fanout-1000": result(1), "many-channels": result(500)}
    failed = {"fanout-1000": {"error": "exited"}, "many-channels": {"error": "exited"}}
    peers = {
        "livefeed": {"label": "livefeed", "scenarios": scenarios},
        "nchan": {"label": "Nchan", "scenarios": failed},
        "floor": {"label": "C floor", "missing": "gcc not installed", "scenarios": {}},
    }
    page = render({"meta": {}, "peers": peers})
    fanout, many = _section(page, "Fan-out: 1,000"), _section(page, "Many channels")
    assert "head of the fan-out" in fanout and "| 1.1 |" in fanout
    assert "head of the fan-out" not in many and "| 1.1 |" not in many
    for table in (fanout, many):
        assert len(_table_rows(table)) == 5  # header, separator, livefeed, Nchan, the floor
        assert len(_cells_per_row(table)) == 1


def test_a_table_whose_every_peer_failed_takes_its_columns_from_the_plan() -> None:
    ladder = {"subscribers": 5000, "tools": 500, "steps": [10_000], "reference": 10_000}
    meta = {"plan": {"ladders": {"many-channels": ladder}}}
    peers = {"livefeed": {"label": "livefeed", "scenarios": {"many-channels": {"error": "x"}}}}
    many = _section(render({"meta": meta, "peers": peers}), "Many channels")
    assert "head of the fan-out" not in many and "@ 10,000/s" in many
    assert len(_cells_per_row(many)) == 1


def test_the_machine_line_gives_the_servers_open_file_limit_when_recorded() -> None:
    def machine_line(meta: dict[str, Any]) -> str:
        page = render({"meta": meta, "peers": {}})
        return next(line for line in page.splitlines() if line.startswith("- Machine:"))

    assert machine_line({"fd_limit": 20000}).endswith(", open-file limit 20,000 per process")
    assert "open-file limit" not in machine_line({})  # runs recorded before it was kept
