"""A run in progress, as people ask about it: how far, what runs for how long, what waits
and on what, and when it should end.

`RunState` is a listener that keeps that picture from the run's events (it never asks
the scheduler); the printer draws it, and `StateFile` publishes it as a small JSON file
(rewritten at most four times a second) that `corral status` reads from another
terminal.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum

from corral.events import (
    Event,
    Idle,
    LockWaiting,
    ModuleFinished,
    ModuleSkipped,
    ModuleStarted,
    RunFinished,
    RunStarted,
    Sampled,
    Waiting,
)
from corral.graph import longest_paths
from corral.units import upper_median

STATE_FILE = "status.json"


class Held(StrEnum):
    """What a module that has not started waits on (`Wait.held`)."""

    REQUIREMENTS = "requirements"
    BACKOFF = "retry backoff"
    LOCK = "lock"
    GATE = "gate"
    SLOT = "slot"
    READY = "ready"  # nothing holds it: it starts at the next pass


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a module has not started: what holds it, and that in words (`str()`)."""

    held: Held
    text: str

    def __str__(self) -> str:
        return self.text


def iso(t: float) -> str:
    """A published time: UTC ISO 8601, as every other --json output writes it."""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def epoch(text: str | float | None) -> float | None:
    """A published time back as seconds since the epoch (a state an older corral wrote
    has the number itself); None when missing or unreadable."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    try:
        return dt.datetime.fromisoformat(text).timestamp() if text else None
    except (TypeError, ValueError):
        return None


@dataclass
class RunState:
    """What a run is doing now, from its events; `clock` is monotonic seconds."""

    clock: object = time.monotonic
    run_id: str = ""
    started_wall: float = 0.0
    started: float = 0.0
    names: list[str] = field(default_factory=list)
    deps: dict[str, list[str]] = field(default_factory=dict)
    slots: int = 1
    expected: dict[str, float] = field(default_factory=dict)  # median seconds, from history
    running: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> (since, try)
    modules: str = ""  # the run's modules directories, to tell runs apart in `corral status`
    done: dict[str, str] = field(default_factory=dict)  # name -> final status
    retrying: set[str] = field(default_factory=set)
    gate: str | None = None  # why the gate holds ready modules back
    gate_modules: list[str] = field(default_factory=list)
    locked: dict[str, str] = field(default_factory=dict)  # name -> 'lock x held by y'
    host: dict = field(default_factory=dict)  # the last sample's load and memory
    finished: bool = False
    status: str = "running"

    @classmethod
    def shared(cls, listeners: list) -> RunState:
        """A RunState for a listener list to feed: the one a listener keeps (the
        printer's `state`, which it then stops feeding itself), else a new one."""
        for listener in listeners:
            state = getattr(listener, "state", None)
            if isinstance(state, cls) and getattr(listener, "feeds_state", False):
                listener.feeds_state = False
                return state
        return cls()

    def __call__(self, event: Event) -> None:
        """Update the picture with one event; an event that says nothing of the run's progress
        changes nothing."""
        now = self.clock()
        if isinstance(event, ModuleStarted):
            self.running[event.name] = (now, event.attempt)
            self.retrying.discard(event.name)
            self.locked.pop(event.name, None)
            if event.name in self.gate_modules:
                self.gate_modules.remove(event.name)
        elif isinstance(event, ModuleFinished):
            r = event.result
            self.running.pop(r.name, None)
            if r.retry_in is None:
                self.done[r.name] = str(r.status)
            else:
                self.retrying.add(r.name)
        elif isinstance(event, ModuleSkipped):
            self.done[event.name] = "skipped"
            self.locked.pop(event.name, None)
        elif isinstance(event, Waiting):
            self.gate = None if event.reason is None else str(event.reason)
            self.gate_modules = list(event.modules) if event.reason else []
        elif isinstance(event, LockWaiting):
            self.locked[event.name] = event.reason
        elif isinstance(event, Sampled):
            s = event.sample
            self.host = {
                "load1": getattr(s, "load1", None),
                "runnable": getattr(s, "runnable", None),
                "mem_available": getattr(s, "mem_available", None),
            }
        elif isinstance(event, RunStarted):
            self.run_id, self.started_wall, self.started = event.run_id, event.started, now
            self.names = list(event.names)
            self.deps = {n: [] for n in event.names}
            for name, dep in event.edges:
                self.deps[name].append(dep)
            self.slots = max(1, event.jobs.slots(os.cpu_count() or 1))
            self.expected = dict(getattr(event, "expected", {}) or {})
        elif isinstance(event, RunFinished):
            self.finished, self.status = True, str(event.status)

    # questions -------------------------------------------------------------------------

    def waiting(self) -> dict[str, Wait]:
        """Every module not started, not done: what it waits on; {} when none waits."""
        out = {}
        for name in self.names:
            if name in self.running or name in self.done:
                continue
            if name in self.retrying:
                out[name] = Wait(Held.BACKOFF, "retry backoff")
                continue
            pending = [d for d in self.deps.get(name, ()) if d not in self.done]
            if pending:
                more = " …" if pending[3:] else ""
                out[name] = Wait(Held.REQUIREMENTS, f"requires {', '.join(pending[:3])}{more}")
            elif name in self.locked:
                out[name] = Wait(Held.LOCK, self.locked[name])
            elif self.gate and name in self.gate_modules:
                out[name] = Wait(Held.GATE, self.gate)
            elif len(self.running) >= self.slots:
                out[name] = Wait(Held.SLOT, "a free slot (-j)")
            else:
                out[name] = Wait(Held.READY, "ready")
        return out

    def eta(self) -> tuple[float | None, int]:
        """(seconds until the run should end, modules without history). The larger of
        the remaining critical path and the remaining work spread over the slots, from
        each module's median duration; an unknown module counts as the median of the
        known ones. (None, n) when nothing is known."""
        now = self.clock()
        known = [v for v in self.expected.values() if v is not None]
        if not known:
            return None, sum(n not in self.done for n in self.names)
        guess = upper_median(known, 0.0)
        unknown = 0
        remaining: dict[str, float] = {}
        for name in self.names:
            if name in self.done:
                remaining[name] = 0.0
                continue
            expected = self.expected.get(name)
            if expected is None:
                unknown += 1
                expected = guess
            if name in self.running:
                expected = max(0.0, expected - (now - self.running[name][0]))
            remaining[name] = expected
        # in plan order: what a module waits on comes first
        finish = longest_paths(self.names, self.deps, remaining)
        path = max(finish.values(), default=0.0)
        return max(path, sum(remaining.values()) / self.slots), unknown

    def snapshot(self) -> dict:
        """The state as `corral status` shows it (JSON-ready)."""
        now, wall = self.clock(), time.time()
        eta, unknown = self.eta()
        return {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "pid_start": _own_start(),  # with the PID: a reused PID is not this run
            "modules": self.modules,
            "started": iso(self.started_wall),
            "elapsed_s": round(now - self.started, 3),
            "status": self.status,
            "total": len(self.names),
            "done": len(self.done),
            "counts": _counts(self.done.values()),
            "running": [
                {
                    "name": n,
                    "attempt": a,
                    "elapsed_s": round(now - since, 3),
                    "start": iso(wall - (now - since)),
                }
                for n, (since, a) in sorted(self.running.items(), key=lambda kv: kv[1][0])
            ],
            "waiting": [{"name": n, "on": str(why)} for n, why in self.waiting().items()],
            "eta_s": None if eta is None else round(eta, 1),
            "unknown": unknown,
            "host": self.host,
            "written": iso(wall),
        }


@functools.cache
def _own_start() -> int | None:
    """corral's own start time in clock ticks since boot (read once)."""
    from corral.procfs import start_time

    return start_time(os.getpid())


def _counts(statuses) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in statuses:
        out[status] = out.get(status, 0) + 1
    return out


class StateFile:
    """Publishes a RunState as LOG_DIR/status.json, atomically, at most every `every`
    seconds (and once more at the end), so `corral status` can read it any time.

    perf: a snapshot costs time in proportion to the run's modules; the next one waits
    at least 100 times the CPU the last one took, so publishing never takes more than
    1 % of corral's CPU however large the run, and 10 times its wall time, so a slow
    disk holds the loop at most a tenth of the time (docs/architecture.md). Wall time
    alone would count the moments a busy host did not run corral: under a load of 20 a
    file of 20 modules lagged more than a second behind the live view."""

    def __init__(self, state: RunState, log_dir: str, every: float = 0.25):
        self.state, self.path, self.every = state, os.path.join(log_dir, STATE_FILE), every
        self.last = 0.0
        self.pause = every  # until the next write: `every`, or more for a costly snapshot
        self.broken = False

    def __call__(self, event: Event) -> None:
        """Publish the state at the run's start, its end, and on idle ticks at most once per
        pause; after a failed write, never again."""
        if self.broken:
            return
        final = isinstance(event, RunFinished)
        if not (final or isinstance(event, (Idle, RunStarted))):
            return
        now = time.monotonic()
        if not final and now - self.last < self.pause:
            return
        self.last, cpu = now, time.thread_time()
        tmp = f"{self.path}.tmp"
        try:
            # perf: dumps runs the C encoder over the whole state; dump would write it
            # piece by piece through Python (docs/architecture.md)
            text = json.dumps(self.state.snapshot())
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
            cost = 100 * (time.thread_time() - cpu), 10 * (time.monotonic() - now)
            self.pause = max(self.every, *cost)
        except OSError:
            self.broken = True  # an unwritable log directory is reported elsewhere


def read_state(path: str) -> dict | None:
    """A published state, or None when there is none (or it is being replaced)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
