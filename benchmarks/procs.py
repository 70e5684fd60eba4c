"""Processes the suite starts: pinned spawn, readiness, /proc accounting, stop by PID.

Everything here reads Linux's /proc directly so that the generator needs no
third-party package (the test suite may run ``--smoke`` from the repo's own venv).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVER_CORE = 0
"""The core every server under test is pinned to."""
LOAD_CORE = 1
"""The core shared by the generator (this process), the publisher and Redis."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pin_self(core: int) -> None:
    """Pin the calling process (the generator) to ``core``, when the machine has it."""
    if core < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {core})


def pinned(argv: Sequence[str], core: int) -> list[str]:
    """``argv`` prefixed with ``taskset -c core`` when the machine has that core."""
    if core < (os.cpu_count() or 1):
        return ["taskset", "-c", str(core), *argv]
    return list(argv)


@dataclass
class Proc:
    """A child process started by the suite; ``stop()`` ends it and only it (plus its group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM the process group we created, then SIGKILL it after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Reap stragglers of the group (e.g. an nginx worker) that outlived their parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    core: int | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin_pipe: bool = False,
    stdout_pipe: bool = False,
) -> Proc:
    """Start ``argv`` in its own process group (so stop() reaches its children only)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    cmd = pinned(argv, core) if core is not None else list(argv)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    popen = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE if stdout_pipe else log,
        stderr=log,
        env=full_env,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    return Proc(name, popen, log_path)


async def wait_http_ok(port: int, path: str, proc: Proc, patience: float = 30.0) -> None:
    """Poll ``GET path`` on 127.0.0.1:port until it answers 200 (bounded by ``patience``)."""
    deadline = time.monotonic() + patience
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            last = proc.log_tail(1) or "no output"
            raise RuntimeError(f"{proc.name} exited early: {last} (log: {proc.log_path})")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            writer.write(request.encode())
            status = await asyncio.wait_for(reader.readline(), 2.0)
            writer.close()
            if b" 200 " in status:
                return
            last = status.decode(errors="replace").strip()
        except (OSError, TimeoutError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on :{port}{path} after {patience}s ({last})")


# --- /proc accounting -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; everything after the last ')' is fixed fields.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int(_stat_fields(int(entry))[1])
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_split(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` (all threads), plus their reaped children's."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)
            # utime stime cutime cstime are fields 14..17 of stat(5); 12..15 after the name.
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
            user += utime + cutime
            system += stime + cstime
    return user / _CLK_TCK, system / _CLK_TCK


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User+system CPU of ``pids`` (all threads), plus their reaped children's."""
    return sum(tree_cpu_split(pids))


def tree_memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pids``; PSS shares pages fairly (nginx master+worker)."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def self_cpu_seconds() -> float:
    """This process's own CPU (the generator), children excluded."""
    times = os.times()
    return times.user + times.system


class CoreMeter:
    """Per-core use from /proc/stat between start() and a read: busy, and task time.

    ``busy`` counts everything but idle (softirq too: loopback TCP work done for a
    process is not always charged to it); ``tasks`` is user+nice+system only, to compare
    with the processes we know of and so estimate other work on the machine.
    """

    def __init__(self) -> None:
        self._start: dict[int, list[int]] = {}

    @staticmethod
    def _read() -> dict[int, list[int]]:
        cores = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                cores[int(name[3:])] = [int(v) for v in values[:8]]
        return cores

    def start(self) -> None:
        self._start = self._read()

    def _deltas(self) -> dict[int, list[int]]:
        now = self._read()
        return {
            core: [b - a for a, b in zip(self._start.get(core, [0] * 8), ticks, strict=True)]
            for core, ticks in now.items()
        }

    def busy(self) -> dict[int, float]:
        """Busy fraction (0..1) per core since start()."""
        result = {}
        for core, delta in self._deltas().items():
            span = sum(delta)
            result[core] = 0.0 if span <= 0 else 1.0 - (delta[3] + delta[4]) / span
        return result

    def tasks(self) -> float:
        """Cores' worth of user+nice+system time since start(), all cores together."""
        deltas = self._deltas()
        span = max((sum(delta) for delta in deltas.values()), default=0)
        if span <= 0:
            return 0.0
        return sum(delta[0] + delta[1] + delta[2] for delta in deltas.values()) / span


LOOPBACK_RPS = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
NETDEV_BACKLOG = Path("/proc/sys/net/core/netdev_max_backlog")
SOFTNET_STAT = Path("/proc/net/softnet_stat")
# Packets a core's receive backlog may hold while steered: a fan-out to 5,000 queues
# 5,000 frames at once (two servers in scale-out, plus the clients' ACKs), against a
# kernel default of 1,000.
STEERED_BACKLOG = 50_000


@contextlib.contextmanager
def loopback_receive_on(core: int | None, backlog: int = STEERED_BACKLOG) -> Iterator[str]:
    """Steer the kernel's loopback receive work to ``core`` (RPS on ``lo``) for the
    run, with a receive backlog of at least ``backlog`` packets, and put the old
    settings back afterwards. Yields what the run had, for the report.

    By default a loopback send runs the receiving socket's TCP input inside the
    sender's system call, so the server under test would be charged for its clients'
    receive work, which on a real network runs on the clients' machines. Steered,
    that work runs on the load core, with the generator it belongs to. Steering
    makes a queue the default path does not have: a fan-out's frames wait in the
    load core's backlog, and past ``netdev_max_backlog`` the kernel drops them, so a
    frame arrives only on the sender's retransmission, 200 ms or more later.
    """
    if core is None:
        yield "kernel default"
        return
    try:
        before = LOOPBACK_RPS.read_text().strip()
        backlog_before = int(NETDEV_BACKLOG.read_text())
        LOOPBACK_RPS.write_text(f"{1 << core:x}\n")
    except OSError as exc:
        yield f"kernel default (could not steer it: {exc.strerror or exc})"
        return
    try:
        depth = max(backlog, backlog_before)
        try:
            NETDEV_BACKLOG.write_text(f"{depth}\n")
        except OSError:
            depth = backlog_before
        yield f"steered to core {core} (RPS on lo, backlog {depth:,} packets)"
    finally:
        with contextlib.suppress(OSError):  # first: a failing RPS restore must not skip it
            NETDEV_BACKLOG.write_text(f"{backlog_before}\n")
        LOOPBACK_RPS.write_text(before + "\n")


def backlog_drops(stat: Path = SOFTNET_STAT) -> int:
    """Packets every core's receive backlog has dropped since boot (a full backlog)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1], 16) for line in lines if line.strip())


@contextlib.contextmanager
def loopback_acks_prompt(enabled: bool) -> Iterator[str]:
    """Make every TCP socket to or from 127.0.0.1 acknowledge each segment at once (the
    route's ``quickack``) for the run, and put the route back afterwards. Yields what
    the run had, for the report.

    A browser reads each frame as it arrives, and Linux acknowledges a small pushed
    segment when that read empties the buffer (Windows and macOS: every second one).
    The counting connections read only every ~16 KiB (``SO_RCVLOWAT``), so their
    receive window does not move and the kernel acknowledges only on its delayed-ACK
    timer (40 ms or more). A server that leaves Nagle on (Nchan) then joins frames that
    a real client's prompt ACK would have let out one by one, and it and the load core
    were charged for fewer packets than real clients cause. The route's ``quickack``
    gives the prompt ACK without waking the generator for each frame.
    """
    if not enabled:
        yield "kernel default (delayed)"
        return
    try:
        original = _ip_route("show", "exact", "127.0.0.1/32").split()
    except (OSError, subprocess.CalledProcessError) as exc:
        yield _not_set(exc)
        return
    plain = list(original)
    if "quickack" in plain:
        del plain[plain.index("quickack") : plain.index("quickack") + 2]
    try:
        _ip_route("change", *plain, "quickack", "1")
    except (OSError, subprocess.CalledProcessError) as exc:
        yield _not_set(exc)
        return
    restore = " ".join(["ip route change table local", *original])
    print(f"quickack set on the 127.0.0.1 route; if this run is killed: {restore}",
          file=sys.stderr, flush=True)  # fmt: skip
    try:
        yield "prompt (quickack on the 127.0.0.1 route)"
    finally:
        try:
            _ip_route("change", *original)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"could not restore the 127.0.0.1 route ({exc}); run: {restore}",
                  file=sys.stderr, flush=True)  # fmt: skip


RUN_LOCK = Path("/tmp/livefeed-benchmarks.lock")  # machine-wide, as the settings are


@contextlib.contextmanager
def one_run_at_a_time(enabled: bool, lock: Path | None = None) -> Iterator[None]:
    """Refuse to start while another run that sets the machine holds the lock. Two at
    once measure each other, and the second takes the settings the first made for the
    machine's own, and leaves them behind when it restores them."""
    if not enabled:
        yield
        return
    path = lock or RUN_LOCK
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise SystemExit(
                f"another benchmark run (pid {holder}) is running on this machine; "
                f"wait for it to end ({path})"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield  # the lock goes with the file's closing, even if this process dies


CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")
CPU_SYSFS = Path("/sys/devices/system/cpu")


def idle_poll_missing(cpus: Path = CPU_SYSFS) -> str | None:
    """Why a 0 µs wake-up latency request cannot keep ``cpus``' idle cores polling, or
    None when it can: each core's cpuidle driver offers the poll state it selects.

    Without a driver (``current_driver`` reads ``none``), the kernel's idle loop halts
    whatever the request says: seen on a KVM guest whose host gave no realtime hint,
    so the built-in ``haltpoll`` driver did not register.
    """
    for core in sorted(cpus.glob("cpu[0-9]*")):
        names = [state.read_text().strip() for state in core.glob("cpuidle/state*/name")]
        if "POLL" not in names:
            return f"no poll state on {core.name} (cpuidle driver: {cpuidle_driver(cpus)})"
    return None


def cpuidle_driver(cpus: Path = CPU_SYSFS) -> str:
    driver = cpus / "cpuidle" / "current_driver"
    return driver.read_text().strip() if driver.exists() else "none"


@contextlib.contextmanager
def cores_awake(
    enabled: bool, device: Path = CPU_DMA_LATENCY, cpus: Path = CPU_SYSFS
) -> Iterator[str]:
    """Keep idle cores polling rather than halted for the run (a PM QoS request of 0 µs
    wake-up latency, held while the device stays open; closing it, or the process
    dying, lifts it). Yields what the run had, for the report.

    With the clients' receive work steered to the load core, each packet a server
    sends interrupts that core. On a VM whose idle cores halt, an interrupt for a
    halted core makes the sender exit to the hypervisor and the host wake it, and
    whether the load core happened to be halted split runs of one step in two:
    livefeed at 3.7-3.9 or 6.1-6.9 µs per delivery (fan-out to 1,000 at 20,000/s).
    Real clients are other machines, woken by their own network cards, not by the
    server's sends.
    """
    if not enabled:
        yield "kernel default"
        return
    missing = idle_poll_missing(cpus)
    if missing:
        # Holding the request would change nothing; say so rather than claim polling.
        yield f"kernel default, halting ({missing})"
        return
    held = None
    try:
        held = os.open(device, os.O_WRONLY)
        os.write(held, struct.pack("i", 0))
    except OSError as exc:
        if held is not None:
            os.close(held)
        yield f"kernel default (could not hold {device} at 0: {exc.strerror or exc})"
        return
    try:
        yield f"polling, not halted ({device} held at 0; cpuidle driver: {cpuidle_driver(cpus)})"
    finally:
        os.close(held)


def _all_threads(proc: Path = Path("/proc")) -> Iterator[int]:
    for task in proc.glob("[0-9]*/task/[0-9]*"):
        yield int(task.name)


@contextlib.contextmanager
def core_cleared(
    core: int | None, threads: Callable[[], Iterable[int]] = _all_threads
) -> Iterator[str]:
    """Move every other thread that may run on ``core`` off it for the run (the
    server's core), and give each its old set of cores back afterwards. Yields what
    the run had, for the report.

    The server under test is pinned to its core, but the machine's own services and
    kernel threads were free to run there too, and a server stalled behind one of them
    shows it in its tail: on the Intel Xeon VM of 2026-11-28, ``perf sched`` on core 0
    during a fan-out to 1,000 at 20,000/s found ``kdamond`` (the kernel's DAMON memory
    monitor) running every ~0.5 s for 1.1-4.7 ms, and RabbitMQ's, Redis's and
    compaction threads in smaller bites, and a server-side trace found the fan-outs
    they hit starting or finishing 2-5 ms late. Threads bound to one core by the
    kernel (its per-core threads) or pinned there by their owner stay; so do the kernel's
    workers that refuse to move. Threads started during the run inherit their parent's
    cores, so a moved service's children stay off too.
    """
    if core is None:
        yield "shared with other threads"
        return
    moved: dict[int, set[int]] = {}
    refused = 0
    for tid in threads():
        try:
            cores = os.sched_getaffinity(tid)
            if core not in cores or cores == {core}:
                continue
            os.sched_setaffinity(tid, cores - {core})
            moved[tid] = cores
        except ProcessLookupError:
            continue  # ended meanwhile
        except OSError:  # a kernel worker that may not move (EINVAL)
            refused += 1
    try:
        yield f"cleared: {len(moved)} other threads moved off it for the run ({refused} refused)"
    finally:
        for tid, cores in moved.items():
            with contextlib.suppress(OSError):  # ended meanwhile
                os.sched_setaffinity(tid, cores)


def _not_set(exc: Exception) -> str:
    reason = str(getattr(exc, "stderr", "") or exc).strip()[:80]
    return f"kernel default (delayed; could not set quickack: {reason})"


def _ip_route(command: str, *args: str) -> str:
    """``ip route <command> table local <args>``; its output."""
    argv = ["ip", "route", command, "table", "local", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


TSTAMP_PREQUEUE = Path("/proc/sys/net/core/netdev_tstamp_prequeue")


def arrival_stamp_point() -> str:
    """Where the kernel stamps a received packet, for the probes' arrival time.

    With ``netdev_tstamp_prequeue`` at 1 (the default) a loopback packet is stamped in
    the sender's path, before the RPS queue to the load core; at 0 only when the load
    core takes it off that queue, so the arrival would include the wait there.
    """
    try:
        prequeue = TSTAMP_PREQUEUE.read_text().strip() == "1"
    except OSError:
        return "unknown (netdev_tstamp_prequeue unreadable)"
    if prequeue:
        return "as the server's send hands the packet to lo"
    return "after the load core's RPS queue (netdev_tstamp_prequeue=0: includes that wait)"


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE to ``wanted`` (the hard limit too, when allowed); return it.

    Children (the servers) inherit it: 10,000 connections need 10,000 descriptors on
    each side.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft
