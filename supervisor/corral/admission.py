"""What may start now, decided in one place.

The plan says which modules are ready (their dependencies settled), in priority order;
`--jobs` whether a slot is free; the gate (`throttle.admit`, fed with the executor's
view of the place) whether the place can take one more; the lock pools whether a ready
module's locks are free. `Admission` asks them in that order (the locks last, so a
module the gate holds takes no lock), for retries that are due first, and remembers for
each module held back since when and why, so its record can say how long it waited.

It never starts anything: the scheduler starts what `take` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from corral.events import Event, LockWaiting
from corral.executor import Clock, Executor
from corral.graph import Graph, Plan
from corral.throttle import Block, Jobs, Limits, Refusal, Running, admit


class Locks:
    """Named pools: at most `size` holders each (1 unless config `pools:` says more)."""

    def __init__(self, sizes: dict[str, int] | None = None):
        self.sizes = sizes or {}
        self.holders: dict[str, list[str]] = {}

    def acquire(self, names: tuple[str, ...], who: str = "") -> str | None:
        """Take every lock in `names` for `who`, or none of them. Returns None when taken,
        else 'lock NAME held by A, B' for the first full pool."""
        for n in names:
            held = self.holders.get(n, [])
            if len(held) >= self.sizes.get(n, 1):
                return f"lock {n} held by {', '.join(held)}"
        for n in names:
            self.holders.setdefault(n, []).append(who)
        return None

    def release(self, names: tuple[str, ...], who: str = "") -> None:
        """Give back what `acquire(names, who)` took."""
        for n in names:
            self.holders[n].remove(who)


@dataclass(slots=True)
class Held:
    """A ready module that has not started: since when a lock or the gate held it."""

    lock_since: float | None = None
    lock_reason: str | None = None  # 'lock apt held by x'
    lock_reasons: list[str] | None = None  # every holder it waited on, in order
    gate_since: float | None = None
    refusal: Refusal | None = None  # the gate's word on it when it was last looked at
    refusal_at: float = 0.0  # when that was (a later closing of the gate overrides it)
    retry: bool = False  # due for a retry, not ready: looked at every pass, never "the rest"
    told: bool = False  # its wait was said to be long (`overdue`)


@dataclass(frozen=True, slots=True)
class Waited:
    """How long an attempt waited once ready, and the gate's last reason, if any."""

    gate_s: float = 0.0
    refusal: Refusal | None = None
    lock_s: float = 0.0
    lock_reason: str | None = None  # 'lock apt held by x; then lock apt held by y'


NOT_HELD = Waited()


@dataclass(frozen=True)
class Expectations:
    """What history says of modules not yet measured."""

    peak_rss: dict[str, float]  # bytes, the memory estimate
    cpu_rate: dict[str, float]  # CPUs kept busy


class Admission:
    """Decides what starts: dependencies (the plan), locks, `--jobs`, then the gate."""

    def __init__(
        self,
        plan: Plan,
        graph: Graph,
        executor: Executor,
        clock: Clock,
        jobs: Jobs,
        limits: Limits,
        pools: dict[str, int] | None = None,
        history: Expectations | None = None,
        emit: Callable[[Event], None] = lambda event: None,
    ):
        self.plan = plan
        self.graph = graph
        self.executor = executor
        self.clock = clock
        self.jobs = jobs
        self.limits = limits
        self.locks = Locks(pools)
        self.history = history or Expectations({}, {})
        self.emit = emit  # tells who waits for a lock held by whom (LockWaiting)
        self.held: dict[str, Held] = {}  # ready (or due for a retry) but not started
        self._gate_held = 0  # how many of `held` the gate holds (gate_since set)
        self.refusal: Refusal | None = None  # why the best ready module waits, this pass
        self._batch: list[Running] = []  # admitted in this pass, not yet running
        # perf: the gate's refusals in this pass, by workload (docs/architecture.md)
        self._refused: dict[str, Refusal] = {}
        self._gate_closed = False  # in this pass, for every workload of the selection
        # workload -> (when, why) the gate last closed for every workload: every module
        # ready then was held for that reason (see _hold_the_rest)
        self._closed: dict[str, tuple[float, Refusal]] = {}
        self._workload = {n: graph.modules[n].header.workload for n in plan.selection.names}
        self._workloads = len(set(self._workload.values()))

    def take(self, due: list[str]) -> list[str]:
        """Modules to start now: those of `due` (retries, in order) that may, then ready
        ones by priority, up to --jobs. Returns [] when nothing may start."""
        self._batch, self._refused, self._gate_closed = [], {}, False
        self.refusal = None
        out = [name for name in due if self._admit(name)] if due else []
        for name in due:
            if (held := self.held.get(name)) is not None:
                held.retry = True
        room = self.jobs.slots(len(self.plan.selection.names)) - len(self.executor.running)
        out += self.plan.take_ready(self._admit, room - len(out))
        if self._gate_closed:
            self._hold_the_rest()
        return out

    def holding(self) -> list[str]:
        """The modules the gate holds back now, sorted; [] when none."""
        return sorted(n for n, h in self.held.items() if h.gate_since is not None)

    def held_back(self) -> int:
        """How many modules the gate holds back now."""
        return self._gate_held

    def gate_holds(self) -> bool:
        """True while the gate holds back at least one module."""
        return self._gate_held > 0

    def overdue(self, now: float, limit: float) -> tuple[dict[str, list[str]], float]:
        """Modules held longer than `limit` seconds by a lock or by the gate for the place
        (not for a free slot: that is waiting for the run's own modules, as with -j N)
        and not told yet, by reason, in the order they became ready; marks them told.
        Also when the next one may become overdue (`now + limit` when none is waiting)."""
        due: dict[str, list[str]] = {}
        soonest = now + limit
        for name, held in self.held.items():
            if held.told:
                continue
            if held.lock_since is not None and held.lock_reason is not None:
                since, reason = held.lock_since, held.lock_reason
            elif held.gate_since is not None and held.refusal is not None:
                refusal = held.refusal
                closed = self._closed.get(self._workload[name])
                if closed is not None and closed[0] > held.refusal_at and not held.retry:
                    refusal = closed[1]  # held since, for the reason the gate closed last
                if refusal.kind in (Block.JOBS, Block.JOBS_AUTO):
                    continue
                since, reason = held.gate_since, str(refusal)
            else:
                continue
            if now - since >= limit:
                held.told = True
                due.setdefault(reason, []).append(name)
            else:
                soonest = min(soonest, since + limit)
        # perf: at most one look a second, however many modules wait
        return due, max(soonest, now + 1.0)

    def started(self, name: str) -> Waited:
        """`name` started: how long it was held, and why (forgets it)."""
        held = self.held.pop(name, None)
        if held is None:
            return NOT_HELD  # perf: the usual case allocates nothing (docs/architecture.md)
        self._gate_held -= held.gate_since is not None
        now = self.clock.monotonic()
        refusal = held.refusal
        if held.gate_since is not None and not held.retry:
            closed = self._closed.get(self._workload[name])
            if closed is not None and closed[0] > held.refusal_at:
                refusal = closed[1]  # it was ready, so held, when the gate closed last
        return Waited(
            now - held.gate_since if held.gate_since is not None else 0.0,
            refusal,
            now - held.lock_since if held.lock_since is not None else 0.0,
            "; then ".join(held.lock_reasons) if held.lock_reasons else None,
        )

    def ended(self, name: str) -> None:
        """An attempt of `name` ended: its locks are free again."""
        self.locks.release(self.graph.modules[name].header.locks, name)

    def forget(self, name: str) -> None:
        """`name` will not start (skipped): it no longer waits for anything."""
        held = self.held.pop(name, None)
        if held is not None and held.gate_since is not None:
            self._gate_held -= 1

    # the gate's view ---------------------------------------------------------------------

    def _admit(self, name: str) -> bool | None:
        """--jobs, the gate, then the locks; a refusal is remembered in `held`.
        None: no module at all can start in this pass (the plan stops looking)."""
        header = self.graph.modules[name].header
        fixed = self.jobs.fixed
        if fixed is not None and len(self.executor.running) + len(self._batch) >= fixed:
            return None
        now = self.clock.monotonic()
        memory = self._memory_need(name)
        # perf: with modules running, a refusal for anything but memory depends only on
        # the workload, and admitting more only makes the gate stricter: one verdict per
        # workload per pass, and once every workload is refused the pass stops instead
        # of asking again for each of thousands of ready modules (docs/architecture.md).
        refusal = self._refused.get(header.workload)
        if refusal is None:
            refusal = admit(
                self._running(now),
                self.limits,
                self.executor.host,
                header.workload,
                memory,
                declared=bool(header.memory),
            )
            if refusal is not None and refusal.kind is not Block.MEMORY:
                self._refused[header.workload] = refusal
        if refusal is not None:
            self._hold(name, refusal, now)
            self.refusal = self.refusal or refusal
            if len(self._refused) == self._workloads:
                self._gate_closed = True
                return None
            return False
        holders = self.locks.acquire(header.locks, name)
        if holders is not None:
            held = self.held.setdefault(name, Held())
            if held.lock_since is None:
                held.lock_since = now
            if held.lock_reason != holders:
                held.lock_reason = holders
                if held.lock_reasons is None:
                    held.lock_reasons = []
                held.lock_reasons.append(holders)
                self.emit(LockWaiting(name, holders))
            return False
        self._batch.append(Running(header.workload, 0.0, memory, 0, self._load(name)))
        return True

    def _hold(self, name: str, refusal: Refusal, now: float) -> None:
        held = self.held.setdefault(name, Held())
        if held.gate_since is None:
            held.gate_since = now
            self._gate_held += 1
        held.refusal, held.refusal_at = refusal, now

    def _hold_the_rest(self) -> None:
        """The gate closed for every workload: what the pass did not look at waits on it
        too, for the reason its workload was refused.

        perf: only modules ready since the last closing are visited; the others are held
        already and read this closing's reason from `_closed` when they start, so a pass
        costs what changed, not what waits (docs/architecture.md)."""
        now = self.clock.monotonic()
        for workload, refusal in self._refused.items():
            self._closed[workload] = (now, refusal)
        for name in self.plan.take_newly_ready():
            held = self.held.get(name)
            if held is None or held.gate_since is None:
                self._hold(name, self._refused[self._workload[name]], now)

    def _running(self, now: float) -> list[Running]:
        """What runs, as the gate weighs it: measured where measured, else expected."""
        out = list(self._batch)
        for attempt in self.executor.running:
            name = attempt.spec.name
            load = attempt.load
            out.append(
                Running(
                    self.graph.modules[name].header.workload,
                    now - attempt.start_mono,
                    self._memory_need(name),
                    attempt.rss,
                    load if load is not None else self._load(name),
                )
            )
        return out

    def _load(self, name: str) -> float:
        """Runnable tasks it is expected to add before it is measured: its CPU rate from
        history, at least 1 if it declares `workload: cpu`, else 0 (light until seen)."""
        known = self.history.cpu_rate.get(name, 0.0)
        return max(known, 1.0) if self.graph.modules[name].header.workload == "cpu" else known

    def _memory_need(self, name: str) -> int:
        """Its declared `memory:`, else its peak from history, else 0 (unknown)."""
        declared = self.graph.modules[name].header.memory
        if declared:
            return declared
        return int(self.history.peak_rss.get(name, 0))
