"""The machine settings a run changes are put back exactly, and a failure changes nothing."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import procs

PF_NO_SETAFFINITY = 0x04000000  # in /proc/<pid>/stat flags: the kernel sets its cores
ROUTE = "local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1"


class _Ip:
    """Stands in for `ip route ... table local`: records changes, shows a route."""

    def __init__(self, shown: str, fail_on: str = "") -> None:
        self.shown, self.fail_on = shown, fail_on
        self.changes: list[list[str]] = []

    def __call__(self, command: str, *args: str) -> str:
        if command == self.fail_on:
            raise subprocess.CalledProcessError(2, ["ip"], stderr="Operation not permitted")
        if command == "change":
            self.changes.append(list(args))
            return ""
        return self.shown + "\n"


def test_quickack_is_set_for_the_run_and_the_route_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ip = _Ip(ROUTE)
    monkeypatch.setattr(procs, "_ip_route", ip)
    with procs.loopback_acks_prompt(True) as setting:
        assert setting.startswith("prompt")
        assert ip.changes == [[*ROUTE.split(), "quickack", "1"]]
    assert ip.changes[-1] == ROUTE.split()


def test_a_route_that_had_quickack_gets_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    ip = _Ip(ROUTE + " quickack 1")
    monkeypatch.setattr(procs, "_ip_route", ip)
    with procs.loopback_acks_prompt(True):
        assert ip.changes == [[*ROUTE.split(), "quickack", "1"]]
    assert ip.changes[-1] == [*ROUTE.split(), "quickack", "1"]


def test_without_permission_the_run_says_so_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ip = _Ip(ROUTE, fail_on="change")
    monkeypatch.setattr(procs, "_ip_route", ip)
    with procs.loopback_acks_prompt(True) as setting:
        assert setting.startswith("kernel default (delayed; could not set quickack")
        assert "Operation not permitted" in setting
    assert ip.changes == []


def test_delayed_acks_leave_the_route_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    ip = _Ip(ROUTE)
    monkeypatch.setattr(procs, "_ip_route", ip)
    with procs.loopback_acks_prompt(False) as setting:
        assert setting == "kernel default (delayed)"
    assert ip.changes == []


def _knobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backlog: int) -> tuple[Path, Path]:
    rps, depth = tmp_path / "rps_cpus", tmp_path / "netdev_max_backlog"
    rps.write_text("0\n")
    depth.write_text(f"{backlog}\n")
    monkeypatch.setattr(procs, "LOOPBACK_RPS", rps)
    monkeypatch.setattr(procs, "NETDEV_BACKLOG", depth)
    return rps, depth


def test_steered_receive_gets_a_deep_backlog_and_both_are_put_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rps, depth = _knobs(monkeypatch, tmp_path, 1000)
    with procs.loopback_receive_on(1, backlog=50_000) as setting:
        assert setting == "steered to core 1 (RPS on lo, backlog 50,000 packets)"
        assert rps.read_text() == "2\n"
        assert depth.read_text() == "50000\n"
    assert rps.read_text() == "0\n"
    assert depth.read_text() == "1000\n"


def test_a_deeper_backlog_than_asked_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, depth = _knobs(monkeypatch, tmp_path, 80_000)
    with procs.loopback_receive_on(1, backlog=50_000) as setting:
        assert setting.endswith("backlog 80,000 packets)")
        assert depth.read_text() == "80000\n"
    assert depth.read_text() == "80000\n"


def test_backlog_drops_add_up_every_cores_second_column(tmp_path: Path) -> None:
    stat = tmp_path / "softnet_stat"
    stat.write_text("00008319 00000000 00000000 00000000\n065a72d6 00050eea 0000000a 00000000\n")
    assert procs.backlog_drops(stat) == 0x50EEA
    assert procs.backlog_drops(tmp_path / "absent") == 0


def _cpus(root: Path, driver: str, states: dict[str, list[str]]) -> Path:
    """A /sys/devices/system/cpu tree: the cpuidle driver and each core's state names."""
    (root / "cpuidle").mkdir(parents=True)
    (root / "cpuidle" / "current_driver").write_text(driver + "\n")
    for core, names in states.items():
        (root / core).mkdir()
        for index, name in enumerate(names):
            (root / core / "cpuidle" / f"state{index}").mkdir(parents=True)
            (root / core / "cpuidle" / f"state{index}" / "name").write_text(name + "\n")
    return root


def test_idle_cores_poll_while_the_run_holds_a_zero_latency_request(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    cpus = _cpus(tmp_path / "cpu", "haltpoll", {"cpu0": ["POLL", "haltpoll"], "cpu1": ["POLL"]})
    with procs.cores_awake(True, device, cpus) as setting:
        assert setting.startswith("polling, not halted")
        assert setting.endswith("; cpuidle driver: haltpoll)")
        assert device.read_bytes() == struct.pack("i", 0)
        held = _open_fds_to(device)
        assert len(held) == 1
    assert _open_fds_to(device) == []  # closing the device is what lifts the request


def test_idle_cores_said_to_halt_when_no_driver_offers_a_poll_state(tmp_path: Path) -> None:
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    cpus = _cpus(tmp_path / "cpu", "none", {"cpu0": [], "cpu1": []})
    with procs.cores_awake(True, device, cpus) as setting:
        assert setting == "kernel default, halting (no poll state on cpu0 (cpuidle driver: none))"
        assert "polling" not in setting  # the report's label keys on that word
        assert _open_fds_to(device) == []  # a request that changes nothing is not made
    assert device.read_bytes() == b""


def test_idle_cores_left_alone_when_asked_or_not_permitted(tmp_path: Path) -> None:
    with procs.cores_awake(False, tmp_path / "absent") as setting:
        assert setting == "kernel default"
    cpus = _cpus(tmp_path / "cpu", "haltpoll", {"cpu0": ["POLL"]})
    with procs.cores_awake(True, tmp_path / "absent", cpus) as setting:
        assert setting.startswith("kernel default (could not hold")
        assert "No such file" in setting


def _open_fds_to(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir() if _target(fd) == str(path)]


def _target(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def test_a_second_run_that_sets_the_machine_is_refused_while_one_holds_the_lock(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "runs.lock"
    refused = pytest.raises(SystemExit, match=rf"another benchmark run \(pid {os.getpid()}\)")
    with procs.one_run_at_a_time(True, lock):
        with refused, procs.one_run_at_a_time(True, lock):
            pass
        with procs.one_run_at_a_time(False, lock):  # the smoke run sets nothing: not held
            pass
    with procs.one_run_at_a_time(True, lock):  # released when the first ended
        pass


def _kernel_worker_that_refuses_to_move() -> int:
    """An unbound kernel worker: free to run on every core, but set by the kernel alone."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            flags = int(stat.read_text().rsplit(")", 1)[1].split()[6])
            tid = int(stat.parent.name)
            if flags & PF_NO_SETAFFINITY and len(os.sched_getaffinity(tid)) > 1:
                return tid
    raise AssertionError("no unbound kernel worker on this machine")


def test_other_threads_leave_the_servers_core_for_the_run_and_get_their_cores_back() -> None:
    assert {0, 1} <= os.sched_getaffinity(0), "the suite runs on a machine of 2 cores or more"
    free = subprocess.Popen(["sleep", "60"])
    pinned = subprocess.Popen(["sleep", "60"])
    ended = subprocess.Popen(["true"])
    ended.wait()
    try:
        os.sched_setaffinity(free.pid, {0, 1})
        os.sched_setaffinity(pinned.pid, {0})
        worker = _kernel_worker_that_refuses_to_move()
        cores_of_worker = os.sched_getaffinity(worker)
        tids = [free.pid, pinned.pid, ended.pid, worker]
        with procs.core_cleared(0, lambda: tids) as setting:
            assert os.sched_getaffinity(free.pid) == {1}
            assert os.sched_getaffinity(pinned.pid) == {0}  # pinned there by its owner
            assert os.sched_getaffinity(worker) == cores_of_worker
            assert setting == "cleared: 1 other threads moved off it for the run (1 refused)"
        assert os.sched_getaffinity(free.pid) == {0, 1}
        assert os.sched_getaffinity(pinned.pid) == {0}
    finally:
        for child in (free, pinned):
            child.kill()
            child.wait()


def test_the_servers_core_left_shared_when_asked() -> None:
    listed: list[str] = []

    def threads() -> list[int]:
        listed.append("listed")
        return [os.getpid()]

    with procs.core_cleared(None, threads) as setting:
        assert setting == "shared with other threads"
    assert not listed  # not even looked at


def test_a_process_cpu_splits_into_user_and_kernel_time_that_add_up() -> None:
    """A child that spends its time in system calls shows up as kernel time, one that
    only computes as user time; their sum is what the CPU per delivery is made of."""
    script = (
        "import os, sys, time\n"
        "end = time.process_time() + 0.3\n"
        "if sys.argv[1] == 'kernel':\n"
        "    zero = os.open('/dev/zero', os.O_RDONLY)\n"
        "    while time.process_time() < end: os.read(zero, 1 << 20)\n"
        "else:\n"
        "    while time.process_time() < end: sum(range(1000))\n"
        "print('done', flush=True)\n"  # then idle until told to go: its CPU holds still
        "sys.stdin.read()\n"
    )
    for kind in ("kernel", "user"):
        child = subprocess.Popen(
            [sys.executable, "-c", script, kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == "done\n"
            user, kernel = procs.tree_cpu_split([child.pid])
            assert procs.tree_cpu_seconds([child.pid]) == pytest.approx(user + kernel)
            assert user + kernel >= 0.25  # the whole 0.3 s burn, in 10 ms ticks
            assert (kernel > user) if kind == "kernel" else (user > kernel), (kind, user, kernel)
        finally:
            child.communicate("")
