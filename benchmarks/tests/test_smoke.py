"""The whole suite in --smoke mode against livefeed: keeps the benchmarks runnable.

Needs redis-server and taskset (Debian: redis-server, util-linux); about 30 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_smoke_run_against_livefeed() -> None:

    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--peers", "livefeed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SMOKE FAILURE" not in result.stderr
