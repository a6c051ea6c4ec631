"""The gate: may one more module of this workload start on this host right now?

A pure function of its inputs (what runs, what was just started, the last host
sample, the limits), so hypothesis can check it. The rules, in order:

1. Nothing running: yes (never stall; ninja's "ensure that we make progress"), except
   for a module whose declared `memory:` does not fit above `--min-free-mem`: starting
   it would only trade a wait for swap or the OOM killer, so it waits, and says so.
2. `--jobs N`: at most N modules. `--jobs auto`: the running modules' weights plus this
   one's may not exceed the CPU count. Weights: cpu 1, mixed 2/3, io 1/2, network 1/3,
   i.e. CPU count x 1 / 1.5 / 2 / 3 modules of one kind at once. Past 80 % of memory in
   use the auto capacity halves; past 90 % nothing new starts.
3. Load: the host's other runnable tasks (procs_running less corral's modules' own
   runnable processes, averaged over about a second: not the minute-long load average),
   plus the load of each running module, plus this module's weight, may not exceed
   `--max-load` (default: CPU count) by more than SLACK. Each module is counted once,
   as itself: by its tree's measured runnable average once sampled, before that by its
   CPU rate from history, at least 1 for `workload: cpu`, else nothing (a module that
   declares nothing and has no history counts as light until measured, one sample
   interval, so an idle host starts -j sleepers at once). A module that ends stops
   counting at once, and one that starts is never counted again inside the host's
   average.
4. CPU pressure: a cpu module does not start while some task stalled for CPU more than
   `CPU_PRESSURE` % of the last sample interval.
5. Memory: MemAvailable, minus what modules started in the last second may still take,
   minus this module's `memory:` (or its measured peak), must stay above
   `--min-free-mem`; and nothing starts while memory pressure exceeds MEM_PRESSURE %.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.jobs import Jobs as Jobs  # where callers look for it
from corral.units import size

WEIGHT = {"cpu": 1.0, "mixed": 2 / 3, "io": 0.5, "network": 1 / 3}
FRESH_S = 3.0  # seconds: a module this young may still grow to its expected memory
SLACK = 0.25  # of a task: the host's average is never exact (a fork in flight)
CPU_PRESSURE = 60.0  # % stalled on CPU
MEM_PRESSURE = 10.0  # % stalled on memory
MEM_HIGH, MEM_FULL = 0.80, 0.90


class Block(StrEnum):
    """What the gate refused a module for (rules 1-5 of this module's docstring)."""

    JOBS = "jobs"
    JOBS_AUTO = "jobs auto"
    LOAD = "load"
    CPU_PRESSURE = "cpu pressure"
    MEMORY_PRESSURE = "memory pressure"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the gate holds a module back: a kind to group by, a detail to show."""

    kind: Block
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class Limits:
    """The run's limits as the gate applies them (--jobs, CPUs, --max-load, --min-free-
    mem)."""

    jobs: Jobs
    cpus: int
    max_load: float | None  # None: CPU count
    min_free_mem: int = 0

    @property
    def load_limit(self) -> float:
        """--max-load, or the CPU count when not given."""
        return self.max_load if self.max_load is not None else float(self.cpus)


@dataclass(frozen=True)
class Running:
    """A running module as the gate sees it."""

    workload: str
    age_s: float
    memory: int  # expected peak (header or history), 0 when unknown
    rss: int  # what it uses now (0 until sampled)
    load: float = 0.0  # runnable tasks it adds: measured, from history, or declared


@dataclass(frozen=True)
class Host:
    """The figures of the last sample that the gate uses; None: not available."""

    others_avg: float | None = None  # runnable tasks besides corral's modules, averaged
    mem_available: int | None = None
    mem_total: int | None = None
    psi_cpu: float | None = None
    psi_mem: float | None = None


def weight(workload: str) -> float:
    """A workload's share of a CPU under --jobs auto; an unknown one weighs as mixed."""
    return WEIGHT.get(workload, WEIGHT["mixed"])


def auto_capacity(limits: Limits, host: Host) -> float:
    """--jobs auto: the weight budget, shrunk when memory runs short."""
    budget = float(limits.cpus)
    if host.mem_available is not None and host.mem_total:
        used = 1.0 - host.mem_available / host.mem_total
        if used >= MEM_FULL:
            return 0.0
        if used >= MEM_HIGH:
            budget /= 2
    return budget


def admit(
    running: list[Running],
    limits: Limits,
    host: Host,
    workload: str,
    memory: int = 0,
    declared: bool = False,
) -> Refusal | None:
    """None if a module of `workload` needing `memory` bytes may start now, else why not.

    `declared`: the module's header states its memory (a hard need even on an idle host).
    """
    if not running:
        if (
            declared
            and host.mem_available is not None
            and host.mem_available - memory < limits.min_free_mem
        ):
            return _memory_reason(host.mem_available, memory, limits.min_free_mem)
        return None
    w = weight(workload)
    if limits.jobs.fixed is not None:
        if len(running) >= limits.jobs.fixed:
            return Refusal(Block.JOBS, f"{len(running)} running = --jobs {limits.jobs}")
    else:
        used = sum(weight(r.workload) for r in running)
        budget = auto_capacity(limits, host)
        if used + w > budget + 1e-9:
            return Refusal(Block.JOBS_AUTO, f"weight {used:.2f} + {w:.2f} > {budget:.2f}")
    if host.others_avg is not None:
        ours = sum(r.load for r in running)
        limit = limits.load_limit
        if host.others_avg + ours + w > limit + SLACK:
            return Refusal(
                Block.LOAD,
                f"{host.others_avg:.1f} other + {ours:.1f} ours + {w:.1f} > {limit:g}",
            )
    if workload == "cpu" and host.psi_cpu is not None and host.psi_cpu > CPU_PRESSURE:
        return Refusal(Block.CPU_PRESSURE, f"{host.psi_cpu:.0f}% > {CPU_PRESSURE:.0f}%")
    if host.psi_mem is not None and host.psi_mem > MEM_PRESSURE:
        return Refusal(Block.MEMORY_PRESSURE, f"{host.psi_mem:.0f}% > {MEM_PRESSURE:.0f}%")
    if host.mem_available is not None:
        fresh = [r for r in running if r.age_s < FRESH_S]
        claimed = sum(max(r.memory - r.rss, 0) for r in fresh)
        left = host.mem_available - claimed - memory
        if left < limits.min_free_mem:
            return _memory_reason(host.mem_available, claimed + memory, limits.min_free_mem)
    return None


def _memory_reason(available: int, wanted: int, keep: int) -> Refusal:
    return Refusal(
        Block.MEMORY,
        f"{size(available)} available, {size(wanted)} wanted, keep {size(keep)} free",
    )
