"""What the host and each module's process tree look like right now, read from /proc.

Host figures come from a handful of /proc files kept open and re-read with pread
(one syscall each, no parsing library): /proc/loadavg, /proc/stat (procs_running and
CPU busy time between samples), /proc/meminfo, /proc/pressure/{cpu,memory,io}.
Pressure is taken from the kernel's `total` stall counters between two samples, so it
reacts within one sample instead of the ten seconds `avg10` needs.

A module's tree is found by walking /proc/PID/task/TID/children from its main
process (a few small reads per process) rather than scanning all of /proc as ps and
psutil's `children()` do: at 5 samples a second that difference is the sampler's
whole budget.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from corral import procfs

PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
EWMA_TAU = 1.0  # seconds: the runnable average follows the host within about a second


@dataclass
class HostSample:
    """One reading of the host."""

    t: float  # monotonic
    wall: float
    load1: float
    runnable: int  # procs_running, not counting corral itself
    runnable_avg: float  # exponentially weighted, tau = EWMA_TAU
    cpu_busy: float  # fraction of all CPUs busy since the previous sample
    mem_total: int
    mem_available: int
    swap_free: int
    psi_cpu: float | None  # % of time some task stalled, since the previous sample
    psi_mem: float | None
    psi_io: float | None
    others_avg: float = 0.0  # runnable_avg less the modules' own runnable tasks


@dataclass
class TreeUsage:
    """A module's whole process tree at one moment (and its peaks so far)."""

    rss: int = 0
    cpu_s: float = 0.0
    read_bytes: int = 0
    write_bytes: int = 0
    processes: int = 0
    threads: int = 0
    peak_rss: int = 0  # the most the whole tree held at one sample, or one process ever
    peak_processes: int = 0
    cpu_rate: float | None = None  # CPUs busy since the previous reading; None at first
    runnable: int = 0  # processes of the tree runnable at this reading
    runnable_avg: float | None = None  # their average, tau = EWMA_TAU; None until read
    t: float = 0.0
    samples: int = 0  # readings taken: with none, nothing above is known
    orphan_user_s: float = 0.0  # rusage of its orphans, reaped by corral (the subreaper)
    orphan_sys_s: float = 0.0


class _ProcFile:
    def __init__(self, path: str):
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = None

    def read(self) -> bytes | None:
        if self.fd is None:
            return None
        try:
            return os.pread(self.fd, 16384, 0)
        except OSError:
            return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class _Previous:
    t: float = 0.0
    cpu_total: int = 0
    cpu_idle: int = 0
    psi: dict = field(default_factory=dict)
    runnable_avg: float | None = None
    others_avg: float = 0.0


class HostSampler:
    """Reads the host; `sample()` costs a few syscalls. Use `close()` when done."""

    # perf: the /proc files stay open and are re-read with pread (docs/architecture.md)

    def __init__(self) -> None:
        self.cpus = len(os.sched_getaffinity(0)) or 1
        self._loadavg = _ProcFile("/proc/loadavg")
        self._stat = _ProcFile("/proc/stat")
        self._meminfo = _ProcFile("/proc/meminfo")
        self._psi = {k: _ProcFile(f"/proc/pressure/{k}") for k in ("cpu", "memory", "io")}
        self._prev = _Previous()
        self.cpu_spent = 0.0  # the sampler's own CPU time, in seconds
        self.last: HostSample | None = None

    def close(self) -> None:
        """Close the /proc files; a sample after it reads nothing (zeros, None)."""
        for f in (self._loadavg, self._stat, self._meminfo, *self._psi.values()):
            f.close()

    def sample(self, ours: int = 0) -> HostSample:
        """Read the host; `ours`: how many of the runnable tasks are corral's modules'
        (read just before), so that the rest, the host's other load, is averaged apart.
        A /proc file that cannot be read leaves its figures 0 (PSI: None); the first
        sample's CPU busy share is 0.0 (nothing to compare with yet)."""
        spent = time.thread_time()
        now = time.monotonic()
        prev = self._prev
        dt = now - prev.t if prev.t else 0.0
        load1 = 0.0
        data = self._loadavg.read()
        if data:
            load1 = float(data.split(None, 1)[0])
        runnable, busy = 0, 0.0
        data = self._stat.read()
        if data:
            first = data.split(b"\n", 1)[0].split()[1:]
            ticks = [int(x) for x in first]
            total, idle = sum(ticks), ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            if prev.cpu_total and total > prev.cpu_total:
                busy = 1.0 - (idle - prev.cpu_idle) / (total - prev.cpu_total)
            prev.cpu_total, prev.cpu_idle = total, idle
            runnable = _procs_running(data)
        mem = _meminfo(self._meminfo.read())
        psi = {}
        for kind, f in self._psi.items():
            psi[kind] = self._pressure(kind, f.read(), now, dt)
        others = max(0, runnable - ours)
        if prev.runnable_avg is None or dt <= 0:
            # One snapshot of procs_running is noisy (corral's own threads, a fork in
            # flight): start from the least of a few, 5 ms apart. A real hog is in all.
            least = min([runnable] + [self._runnable_now(pause=0.005) for _ in range(2)])
            avg, others_avg = float(least), float(max(0, least - ours))
        else:
            alpha = 1.0 - math.exp(-dt / EWMA_TAU)
            avg = prev.runnable_avg + alpha * (runnable - prev.runnable_avg)
            others_avg = prev.others_avg + alpha * (others - prev.others_avg)
        prev.runnable_avg, prev.others_avg = avg, others_avg
        prev.t = now
        sample = HostSample(
            now,
            time.time(),
            load1,
            runnable,
            avg,
            busy,
            mem.get(b"MemTotal", 0),
            mem.get(b"MemAvailable", 0),
            mem.get(b"SwapFree", 0),
            psi["cpu"],
            psi["memory"],
            psi["io"],
            others_avg,
        )
        self.last = sample
        self.cpu_spent += time.thread_time() - spent
        return sample

    def _runnable_now(self, pause: float = 0.0) -> int:
        time.sleep(pause)
        return _procs_running(self._stat.read() or b"")

    def _pressure(self, kind: str, data: bytes | None, now: float, dt: float) -> float | None:
        """% of wall time some task stalled on `kind` since the last sample (avg10 at first)."""
        if not data:
            return None
        line = data.split(b"\n", 1)[0]  # "some avg10=… avg60=… avg300=… total=…"
        fields = dict(part.split(b"=") for part in line.split()[1:])
        total = int(fields[b"total"])
        before = self._prev.psi.get(kind)
        self._prev.psi[kind] = total
        if before is None or dt <= 0:
            return float(fields[b"avg10"])
        return min(100.0, (total - before) / (dt * 1e6) * 100.0)


def _procs_running(stat: bytes) -> int:
    """procs_running of /proc/stat, minus one: corral itself runs while it reads it."""
    at = stat.find(b"procs_running ")
    return max(0, int(stat[at + 14 : stat.index(b"\n", at)]) - 1) if at >= 0 else 0


def _meminfo(data: bytes | None) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    if not data:
        return out
    for line in data.split(b"\n"):
        key, _, rest = line.partition(b":")
        if key in (b"MemTotal", b"MemAvailable", b"SwapFree"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def process_tree(root: int) -> list[int]:
    """The root and every descendant still attached to it (via task/*/children); [root]
    alone when it has no children or is gone."""
    # perf: walk down from the root, never scan all of /proc (docs/architecture.md)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                continue
    return out


def pss(pid: int | str) -> int | None:
    """Proportional set size: each shared page divided among the processes sharing it,
    so summing over a tree counts shared pages once (2,000 `sleep`s are not 3 GB); None
    when the process is gone or its smaps_rollup cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
        at = data.index(b"\nPss:")
        return int(data[at + 5 : data.index(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None


def tree_usage(
    root: int,
    usage: TreeUsage | None = None,
    tree: list[int] | None = None,
    proportional: bool = False,
) -> TreeUsage:
    """Sum memory, CPU, I/O and counts over the tree under `root`; updates peaks in
    `usage` (a new TreeUsage when None) and returns it. Memory is RSS, or PSS with
    `proportional` (dearer: a page-table walk). A tree already gone counts as no
    processes and no sample (`samples` is not advanced), and so does a process without
    an address space (exiting: its memory goes before it is a zombie, and it would read
    as a peak of 0 bytes, which no process has)."""
    usage = usage or TreeUsage()
    rss = processes = threads = runnable = 0
    cpu = 0.0
    read = write = 0
    for pid in tree if tree is not None else process_tree(root):
        fields = procfs.stat(pid)
        if not fields or fields[0] == b"Z":
            continue
        # VmHWM: this process's own high-water mark, which catches a peak between samples;
        # none: its address space is gone (exiting), so it says nothing, as a zombie
        hwm = procfs.status_kb(pid, b"VmHWM")
        if hwm is None:
            continue
        usage.peak_rss = max(usage.peak_rss, hwm)
        processes += 1
        runnable += fields[0] == b"R"
        threads += int(fields[17])
        resident = int(fields[21]) * PAGE
        rss += (pss(pid) or resident) if proportional else resident
        # utime, stime, and the waited-for children's cutime, cstime
        cpu += sum(int(x) for x in fields[11:15]) / TICK
        try:
            with open(f"/proc/{pid}/io", "rb") as f:
                for line in f.read().split(b"\n"):
                    if line.startswith(b"read_bytes:"):
                        read += int(line[11:])
                    elif line.startswith(b"write_bytes:"):
                        write += int(line[12:])
        except OSError:
            pass
    now = time.monotonic()
    if usage.t:
        usage.cpu_rate = max(0.0, cpu - usage.cpu_s) / max(now - usage.t, 1e-3)
    if usage.runnable_avg is None:
        usage.runnable_avg = float(runnable)
    else:
        alpha = 1.0 - math.exp(-(now - usage.t) / EWMA_TAU)
        usage.runnable_avg += alpha * (runnable - usage.runnable_avg)
    usage.runnable = runnable
    usage.t = now
    usage.samples += processes > 0  # a tree already gone says nothing
    usage.rss, usage.cpu_s, usage.processes, usage.threads = rss, cpu, processes, threads
    usage.read_bytes = max(usage.read_bytes, read)
    usage.write_bytes = max(usage.write_bytes, write)
    usage.peak_rss = max(usage.peak_rss, rss)
    usage.peak_processes = max(usage.peak_processes, processes)
    return usage
