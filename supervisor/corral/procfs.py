"""Small readers of /proc files, shared by the executor, the sampler, the records,
recovery and the run lock.

Each returns None when the process is gone or the file unreadable: processes come and
go between a directory listing and a read, and that is never an error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def boot_id() -> str | None:
    """This boot's id (Linux's random boot_id); None where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def pids() -> Iterator[int]:
    """Every process id now in /proc."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit():
            yield int(entry.name)


def stat(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, …]
    (field N of proc(5) is at index N - 3)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def status_kb(pid: int | str, key: bytes) -> int | None:
    """A `Key:   N kB` line of /proc/PID/status, in bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
        at = data.index(key + b":")
        return int(data[at + len(key) + 1 : data.index(b"kB", at)]) * 1024
    except (OSError, ValueError):
        return None


def euid(pid: int | str) -> int | None:
    """The process's effective user id (/proc/PID/status `Uid:`)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("Uid:")).split()[2])
    except (OSError, StopIteration, ValueError):
        return None


def flock_takers(st: os.stat_result) -> list[int] | None:
    """The PIDs /proc/locks names as having taken a flock on the file `st` describes
    (a taker may since have exited and left the descriptor to another); [] for none,
    None when /proc/locks cannot be read."""
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            return [int(p[4]) for p in map(str.split, f) if p[1] == "FLOCK" and p[5] == key]
    except (OSError, ValueError, IndexError):
        return None


def has_open(pid: int | str, st: os.stat_result) -> bool:
    """Whether a descriptor of the process is the file `st` describes (False when its
    descriptors cannot be read)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for name in names:
        try:
            other = os.stat(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def environ(pid: int | str) -> list[bytes] | None:
    """/proc/PID/environ as `NAME=value` byte strings."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    fields = stat(pid)
    return fields is not None and fields[0] != b"Z"


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot; None when it is gone."""
    fields = stat(pid)
    return int(fields[19]) if fields else None


def live_start_time(pid: int) -> int | None:
    """The start time of `pid` while it runs; None when it is gone or a zombie (a killed
    corral whose parent has not reaped it yet is dead all the same)."""
    fields = stat(pid)
    return int(fields[19]) if fields and fields[0] != b"Z" else None


def marked(run_id: str, among=None) -> dict[int, tuple[str, int]]:
    """Live processes (of `among`, default all) whose environment carries
    CORRAL_RUN_ID=run_id: pid -> (module, attempt). {} when none."""
    needle = f"CORRAL_RUN_ID={run_id}".encode()
    me = os.getpid()
    out = {}
    for pid in pids() if among is None else among:
        env = environ(pid) if pid != me else None
        if not env or needle not in env or not alive(pid):
            continue
        values = dict(v.split(b"=", 1) for v in env if b"=" in v)
        name = values.get(b"CORRAL_MODULE", b"?").decode(errors="replace")
        attempt = int(values.get(b"CORRAL_ATTEMPT", b"1") or 1)
        out[pid] = (name, attempt)
    return out


def children_of_self() -> list[tuple[int, int]]:
    """(pid, process group) of every live process whose parent is this one (for a
    subreaper: the orphans reparented to it too); [] when none."""
    me = str(os.getpid()).encode()
    out = []
    for pid in pids():
        fields = stat(pid)
        if fields and fields[1] == me and fields[0] != b"Z":
            out.append((pid, int(fields[2])))
    return out
