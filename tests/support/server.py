"""A real ``livefeed serve`` process on a free port, as a test's subject."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from livefeed.config import Settings
from livefeed.server import build
from tests.support.ports import free_port
from tests.support.timing import TIMEOUT, async_wait_until, wait_until

PUBLISH_KEY = "test-publish-key"


def _clean_environ() -> dict[str, str]:
    """The test runner's environment without any livefeed setting leaking in."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVEFEED_") and k not in {"REDIS_URL", "PORT"}
    }


# The app under uvicorn's own command, as a deployment that does not use `livefeed serve`
# would run it: no direct write path (the ASGI fallback), uvicorn's defaults.
PLAIN_UVICORN = ("uvicorn", "--factory", "livefeed.app:create_app")


class ServerProcess:
    def __init__(
        self,
        env: dict[str, str],
        args: tuple[str, ...] = (),
        command: tuple[str, ...] = (),
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``command``: the module to run and its arguments (``livefeed serve`` unless
        given, e.g. :data:`PLAIN_UVICORN`); ``--host`` and ``--port`` are added.
        ``open_files``: the (soft, hard) open-file limit to start it under."""
        self.env = {**_clean_environ(), "LIVEFEED_PUBLISH_KEYS": PUBLISH_KEY, **env}
        self.args = args
        self.command = command or ("livefeed", "serve")
        self.open_files = open_files
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="livefeed-server-", suffix=".log")[1])
        self.expect_tracebacks = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _get(self, path: str) -> int:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return 0

    def _spawn(self, ready_path: str) -> bool:
        """Start the process on ``self.port``; whether it came up (else it exited)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    *self.command,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.open_files is None else self._limit_open_files,
            )
        process = self.process
        wait_until(
            lambda: process.poll() is not None or self._get(ready_path) == 200,
            what=f"livefeed serve on {self.port}",
        )
        return process.poll() is None

    def _limit_open_files(self) -> None:
        """(In the child, before it runs Python.)"""
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def start(self, ready_path: str = "/healthz") -> ServerProcess:
        for _attempt in range(3):  # the free port may be taken between choosing and binding
            self.port = free_port()
            if self._spawn(ready_path):
                return self
            if "address already in use" not in self.log():
                break
        raise RuntimeError(f"livefeed serve did not start:\n{self.log()}")

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port, as a deploy would."""
        self.terminate()
        self.start_again()

    def start_again(self) -> None:
        """Start again on the same port after terminate() or kill(): ``restart()`` in
        two halves, for a test that acts while the server is down."""
        if not self._spawn("/healthz"):
            raise RuntimeError(f"livefeed serve did not restart:\n{self.log()}")

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        """SIGTERM and wait; then fail if the server logged an unexpected traceback
        (a test that provokes one on purpose sets ``expect_tracebacks``)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        log = self.log()
        self.log_path.unlink(missing_ok=True)
        if not self.expect_tracebacks and "Traceback" in log:
            raise AssertionError(f"the server logged a traceback:\n{log[-4000:]}")


@contextlib.asynccontextmanager
async def serve_in_process(settings: Settings) -> AsyncIterator[str]:
    """``livefeed serve``'s uvicorn server run in the test's own event loop, for tests
    that plant a fault in it or look at its objects; yields ``host:port``."""
    server = build(settings, configure_logging=False)
    serving = asyncio.create_task(server.serve())
    await async_wait_until(lambda: server.started, what="the in-process server")
    try:
        yield f"{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, TIMEOUT)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: ServerProcess) -> Samples:
    """The server's /metrics, as (name, sorted labels) -> value."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        text = (await http.get(f"{server.url}/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
