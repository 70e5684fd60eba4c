"""How a step is judged: what makes it clean, and when it says nothing about the server."""

from __future__ import annotations

from benchmarks.session import Step


def _step(**figures: float) -> Step:
    base = {
        "sent": 120, "seconds": 6.0, "server_util": 0.5, "load_core_busy": 0.5,
        "server_cpu": 3.0, "drain_cpu": 0.001,
    }  # fmt: skip
    step = Step(target=20_000, rate=20, **{**base, **figures})  # type: ignore[arg-type]
    step.judge()
    return step


def test_a_quiet_step_that_meets_every_limit_is_clean() -> None:
    step = _step()
    assert step.clean and step.valid and not step.loaded


def test_a_pass_with_the_load_core_past_90_percent_counts() -> None:
    step = _step(load_core_busy=0.95)
    assert step.clean and step.valid and step.loaded


def test_a_loaded_pass_that_did_not_keep_up_is_invalid() -> None:
    # The server still sending a backlog after publishing stopped: its measured use
    # during the step says too little.
    backed_up = _step(load_core_busy=0.95, server_cpu=1.0, drain_cpu=0.2)
    assert not backed_up.clean and not backed_up.valid
    assert backed_up.verdict == "load core saturated"
    late_reads = _step(load_core_busy=0.95, p99_read=2.0)
    assert not late_reads.clean and not late_reads.valid
    # The same backlog on a quiet load core is the server's own: judged by its limits.
    assert _step(server_cpu=1.0, drain_cpu=0.2).clean


def test_a_loaded_and_noisy_failure_names_both() -> None:
    step = _step(load_core_busy=0.95, other=0.5, loss=0.01)
    assert not step.valid
    assert step.verdict.startswith("machine busy (0.50 cores of other work); load core")


def test_a_failure_with_the_load_core_past_90_percent_is_invalid() -> None:
    step = _step(load_core_busy=0.95, loss=0.01)
    assert not step.clean and not step.valid
    assert step.verdict.startswith("load core saturated; loss 1.00%")


def test_a_failure_on_a_quiet_load_core_is_the_servers() -> None:
    step = _step(loss=0.01, server_util=0.99)
    assert not step.clean and step.valid
    assert step.verdict == "loss 1.00%; server core saturated"


def test_a_late_publisher_is_the_load_sides_unless_the_server_was_saturated() -> None:
    assert not _step(sent=100).valid
    assert _step(sent=100, server_util=0.99).valid
