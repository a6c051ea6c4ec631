"""Trace helpers: modules that write when they start and end, and checks over those times.

Modules append `start NAME T` / `end NAME T` lines with bash's $EPOCHREALTIME (no
fork), so the checks see what really happened, not what corral says happened.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path


def traced(body: str = "", trace_var: str = "TRACE") -> str:
    """A module body that records its start and end around `body` (which may `exit`)."""
    return (
        f'echo "start $CORRAL_MODULE $EPOCHREALTIME" >> "${trace_var}"\n'
        f'trap \'echo "end $CORRAL_MODULE $EPOCHREALTIME" >> "${trace_var}"\' EXIT\n'
        f"{body}\n"
    )


@dataclass
class Interval:
    name: str
    start: float
    end: float


def read_trace(path: Path) -> dict[str, list[Interval]]:
    """Each module's executions, in order; a module with no `end` line ends at +inf."""
    starts: dict[str, list[float]] = {}
    out: dict[str, list[Interval]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        kind, name, t = line.split()
        if kind == "start":
            starts.setdefault(name, []).append(float(t))
        else:
            out.setdefault(name, []).append(Interval(name, starts[name].pop(0), float(t)))
    for name, left in starts.items():
        out.setdefault(name, []).extend(Interval(name, s, float("inf")) for s in left)
    return out


def max_overlap(intervals: list[Interval]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted(
        [(i.start, 1) for i in intervals] + [(i.end, -1) for i in intervals],
        key=lambda p: (p[0], p[1]),
    )
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def state(pid: int | str) -> bytes | None:
    """The process's state letter from /proc (b"S", b"R", b"Z" ...); None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    return state(pid) not in (None, b"Z")


def wait_for(path: Path, proc, timeout: float = 30.0) -> None:
    """Until `path` exists; fails, with what the process said, if the process `proc`
    ends first or it takes `timeout` seconds."""
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def wait_dead(pid: int, timeout: float) -> bool:
    """Whether `pid` ended (`alive` says no) within `timeout` seconds."""
    end = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.02)
    return not alive(pid)


def read_pid(path: Path, timeout: float = 20.0) -> int:
    """The PID a module wrote into `path`, once it is there; AssertionError after
    `timeout` seconds without one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        time.sleep(0.01)
    raise AssertionError(f"{path} never written")


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment contains `marker` (e.g. CORRAL_RUN_ID=...): leftovers."""
    found = []
    needle = marker.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and alive(int(entry.name)):
            found.append(int(entry.name))
    return found
