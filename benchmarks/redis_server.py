"""The suite's own redis-server, on a free port, pinned to the load core (never :6379)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.procs import LOAD_CORE, Proc, free_port, spawn


class RedisServer:
    """A throwaway redis-server without persistence; ``flush()`` between scenarios."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = run_dir / "redis"
        self._proc: Proc | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--maxclients", "20000",
            "--loglevel", "warning",
        ]  # fmt: skip
        self._proc = spawn("redis-server", argv, self._dir / "redis.log", core=LOAD_CORE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "+PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self._proc.log_tail()}")

    def command(self, *words: str) -> str:
        """One command over redis-cli; returns its first reply line ('' on failure)."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-raw", *words],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        reply = result.stdout.strip()
        return "+PONG" if reply == "PONG" else reply

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    def flush(self) -> None:
        self.command("FLUSHALL")

    def version(self) -> str:
        info = self.command("INFO", "server")
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None
