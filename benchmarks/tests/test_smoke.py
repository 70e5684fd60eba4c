"""The whole suite in --smoke mode against livefeed, and a held step (--hold): keeps the
benchmarks runnable.

Needs redis-server and taskset (Debian: redis-server, util-linux); about 30 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


def test_smoke_run_against_livefeed() -> None:
    result = _benchmarks("--peers", "livefeed")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SMOKE FAILURE" not in result.stderr


def test_a_held_step_runs_once_at_its_rate_and_says_which_processes_serve_it() -> None:
    result = _benchmarks("--hold", "300:1.5", "--peers", "livefeed", "--scenarios",
                         "many-channels")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    announced = re.search(r"livefeed: 300 deliveries/s for 1.5 s from now; server pids: (\d+)",
                          result.stdout)  # fmt: skip
    assert announced, result.stdout
    run_dir = Path(re.search(r"logs in (\S+)", result.stdout).group(1))  # type: ignore[union-attr]
    assert run_dir.name.endswith("-smoke-hold")
    peer = json.loads((run_dir / "results.json").read_text())["peers"]["livefeed"]
    steps = peer["scenarios"]["many-channels"]["steps"]
    assert [step["target"] for step in steps] == [300]
    assert 1.4 < steps[0]["seconds"] < 2.0  # the publisher's own elapsed time


def test_a_held_step_is_refused_where_it_means_nothing() -> None:
    recorded = _benchmarks("--hold", "300:1", "--record", "--peers", "livefeed")
    assert recorded.returncode == 2 and "never recorded" in recorded.stderr
    stepless = _benchmarks("--hold", "300:1", "--peers", "livefeed", "--scenarios",
                           "idle-memory")  # fmt: skip
    assert stepless.returncode == 2 and "this plan has none for: idle-memory" in stepless.stderr
    for bad in ("fast", "300", "300:0", "0:2", "300:-1"):
        malformed = _benchmarks("--hold", bad, "--peers", "livefeed")
        assert malformed.returncode == 2, bad
        assert "argument --hold:" in malformed.stderr and "RATE" in malformed.stderr, bad
