"""The run loop: what may start now (dependencies, --jobs, locks), retries, signals.

The scheduler never touches a process (the executor does) and never decides what
depends on what (the plan does); it connects the two and tells listeners.
"""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.events import (
    AttemptResult,
    Event,
    Idle,
    LockWaiting,
    ModuleFinished,
    ModuleSkipped,
    ModuleStarted,
    ModuleSummary,
    Notice,
    RunFinished,
    RunStarted,
    Sampled,
    Waiting,
)
from corral.executor import Clock, Executor, Spec
from corral.graph import Graph, Plan, Selection
from corral.status import EXIT_WARNING, FAILURES, RETRYABLE, Status
from corral.throttle import Block, Jobs, Limits, Refusal, Running, admit

MAX_BACKOFF = 60.0
IDLE = Idle()


@dataclass(frozen=True)
class RunSettings:
    """The parts of the config the loop needs."""

    run_id: str
    jobs: Jobs
    fail_fast: bool = False
    pools: dict | None = None
    retry_backoff: float = 1.0
    log_dir: Path | None = None  # this run's log directory; None: no logs (dry run)
    env: dict | None = None  # base environment of every module (None: empty)
    dry_run: bool = False
    max_load: float | None = None
    min_free_mem: int = 0
    sample_interval: float = 0.2
    peak_rss: dict | None = None  # measured peaks from history: the memory estimate
    cpu_rate: dict | None = None  # CPUs each module kept busy, from history
    durations: dict | None = None  # median durations from history (progress and ETA)


def backoff(attempt: int, base: float) -> float:
    """Delay before attempt `attempt + 1`: base, 2×base, 4×base … capped at a minute."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF)


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
        for n in names:
            self.holders[n].remove(who)


class Scheduler:
    """Runs one selection through an executor; `run()` returns the RunFinished event."""

    def __init__(
        self,
        graph: Graph,
        selection: Selection,
        settings: RunSettings,
        executor: Executor,
        emit: Callable[[Event], None],
        clock: Clock = time,
    ):
        self.graph = graph
        self.selection = selection
        self.settings = settings
        self.executor = executor
        self.emit = emit
        self.clock = clock  # every duration and deadline, and the stored wall times
        self.plan = Plan(selection, graph)
        self.locks = Locks(settings.pools)
        self.summaries = {n: ModuleSummary(n, Status.SKIPPED) for n in selection.names}
        self.retrying: dict[str, float] = {}  # name -> monotonic time of its next attempt
        self.stop_signal: int | None = None  # SIGINT/SIGTERM/SIGHUP once received
        self._env = dict(settings.env or {})
        self.limits = Limits(settings.jobs, executor.cpus, settings.max_load, settings.min_free_mem)
        self._sampling = True  # until the executor says it has nothing to measure
        self.waiting_since: dict[str, float] = {}  # refused by the gate since (monotonic)
        self.wait_reason: dict[str, Refusal] = {}
        self.delays: dict[tuple[str, int], tuple[float, Refusal | None]] = {}
        self.gate_reason: Refusal | None = None  # why the best ready module waits, if so
        self.lock_since: dict[str, float] = {}  # ready but its lock was held, since
        self.lock_reason: dict[str, str] = {}  # ... and by whom: 'lock apt held by x'
        self.lock_waits: dict[tuple[str, int], float] = {}
        self.started_mono: dict[tuple[str, int], float] = {}
        self._batch: list[Running] = []  # admitted in this pass, not yet running
        # perf: the gate's refusals in this pass, by workload (docs/architecture.md)
        self._refused: dict[str, Refusal] = {}
        self._gate_closed = False  # in this pass, for every workload of the selection
        self._workload = {n: graph.modules[n].header.workload for n in selection.names}
        self._workloads = len(set(self._workload.values()))
        self._next_sample = 0.0
        self._log_dir = None if settings.log_dir is None else str(settings.log_dir)
        self.peak_load = 0.0

    def run(self) -> RunFinished:
        started = self.clock.time()
        edges = [(n, d) for n in self.selection.names for d in sorted(self.selection.waits[n])]
        self.emit(
            RunStarted(
                self.settings.run_id,
                started,
                list(self.selection.names),
                self.settings.jobs,
                _str(self.settings.log_dir),
                self.settings.dry_run,
                edges,
                {n: d for n, d in (self.settings.durations or {}).items() if n in self.summaries},
                {
                    n: self.graph.modules[n].header.locks
                    for n in self.selection.names
                    if self.graph.modules[n].header.locks
                },
            )
        )
        executor, plan = self.executor, self.plan
        slots = self.settings.jobs.slots(len(self.selection.names))
        # Measure the place when due; start as many ready modules as --jobs, the locks
        # and the gate allow (retries due first); then wait for an exit, a signal, the
        # next retry or the next sample, and account for it.
        while plan.more_to_do():
            self._sample_if_due()
            if self.stop_signal is None:
                self._batch, self._refused, self._gate_closed = [], {}, False
                refused_before = self.gate_reason
                self.gate_reason = None
                self._start_retries()
                room = slots - len(executor.running)
                for name in plan.take_ready(self._admit, room):
                    self._start(name, 1)
                if self._gate_closed:
                    self._mark_waiting()
                if self.gate_reason != refused_before:
                    self.emit(Waiting(self.gate_reason, sorted(self.waiting_since)))
            if not executor.running and not self.retrying and not self.waiting_since:
                if self.stop_signal is not None or not plan.more_to_do():
                    break  # stopped (what has not started never will), or all settled
                # Nothing runs, nothing is due for a retry, the gate holds nothing back,
                # and still something is left: no event can ever change that.
                raise RuntimeError(
                    f"stuck: nothing runs and nothing can start, yet {plan.describe()}; "
                    "this is a bug in corral"
                )
            self.emit(IDLE)
            wake = executor.wait(self._timeout())
            for signum in wake.signals:
                self._on_signal(signum)
            for result in wake.finished:
                self._on_finished(result)
        return self._finish(started)

    # sampling --------------------------------------------------------------------------

    def _sample_if_due(self) -> None:
        if not self._sampling:
            return
        now = self.clock.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + self.settings.sample_interval
        sample = self.executor.sample()
        if sample is None:
            self._sampling = False
            return
        self.peak_load = max(self.peak_load, sample.runnable_avg, sample.load1)
        self.emit(
            Sampled(sample, len(self.executor.running), len(self.waiting_since), self.gate_reason)
        )

    def _timeout(self) -> float | None:
        """Until the next retry, or the next sample while modules run or wait."""
        timeouts = [t for t in (self._next_retry_in(),) if t is not None]
        if self._sampling and (self.executor.running or self.waiting_since):
            timeouts.append(max(0.0, self._next_sample - self.clock.monotonic()))
        return min(timeouts) if timeouts else None

    def _running(self) -> list[Running]:
        """What runs, as the gate weighs it: measured where measured, else expected."""
        now = self.clock.monotonic()
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
        known = (self.settings.cpu_rate or {}).get(name, 0.0)
        return max(known, 1.0) if self.graph.modules[name].header.workload == "cpu" else known

    def _memory_need(self, name: str) -> int:
        declared = self.graph.modules[name].header.memory
        if declared:
            return declared
        return int((self.settings.peak_rss or {}).get(name, 0))

    # starting --------------------------------------------------------------------------

    def _admit(self, name: str) -> bool | None:
        """The gate, then the locks; a refusal by the gate is remembered as a delay.
        None: no module at all can start in this pass (the caller stops looking)."""
        header = self.graph.modules[name].header
        fixed = self.settings.jobs.fixed
        if fixed is not None and len(self.executor.running) + len(self._batch) >= fixed:
            return None
        # perf: with modules running, a refusal for anything but memory depends only on
        # the workload, and admitting more only makes the gate stricter: one verdict per
        # workload per pass, and once every workload is refused the pass stops instead
        # of asking again for each of thousands of ready modules (docs/architecture.md).
        reason = self._refused.get(header.workload)
        if reason is None:
            reason = admit(
                self._running(),
                self.limits,
                self.executor.host,
                header.workload,
                self._memory_need(name),
                declared=bool(header.memory),
            )
            if reason is not None and reason.kind is not Block.MEMORY:
                self._refused[header.workload] = reason
        if reason is not None:
            self.waiting_since.setdefault(name, self.clock.monotonic())
            self.wait_reason[name] = reason
            self.gate_reason = self.gate_reason or reason
            if len(self._refused) == self._workloads:
                self._gate_closed = True
                return None
            return False
        held = self.locks.acquire(header.locks, name)
        if held is not None:
            self.lock_since.setdefault(name, self.clock.monotonic())
            if self.lock_reason.get(name) != held:
                self.lock_reason[name] = held
                self.emit(LockWaiting(name, held))
            return False
        self._batch.append(
            Running(header.workload, 0.0, self._memory_need(name), 0, self._load(name))
        )
        return True

    def _mark_waiting(self) -> None:
        """The gate closed for every workload: what the pass did not look at waits on it
        too, for the reason its workload was refused."""
        now = self.clock.monotonic()
        for name in self.plan.ready_unordered():
            self.waiting_since.setdefault(name, now)
            self.wait_reason[name] = self._refused[self._workload[name]]

    def _start_retries(self) -> None:
        now = self.clock.monotonic()
        for name, when in sorted(self.retrying.items(), key=lambda kv: kv[1]):
            if when > now:
                break
            if self._admit(name):
                del self.retrying[name]
                self._start(name, len(self.summaries[name].attempts) + 1)

    def _start(self, name: str, attempt: int) -> None:
        module = self.graph.modules[name]
        log_path = None
        if self._log_dir is not None:
            log_path = (
                f"{self._log_dir}/{name}.log"
                if attempt == 1
                else f"{self._log_dir}/{name}.{attempt}.log"
            )
        env = self._env.copy()
        env["CORRAL_MODULE"] = name
        env["CORRAL_ATTEMPT"] = str(attempt)
        spec = Spec(
            name,
            module.path,
            attempt,
            env,
            log_path,
            module.header.timeout,
            module.header.detach,
        )
        try:
            job = self.executor.start(spec)
        except OSError as exc:
            now = self.clock.time()
            self.started_mono[(name, attempt)] = self.clock.monotonic()
            self._on_finished(
                AttemptResult(
                    name,
                    attempt,
                    Status.FAILED,
                    None,
                    None,
                    now,
                    now,
                    0.0,
                    None,  # nothing ran, so nothing was measured: unknown, never 0
                    None,
                    None,
                    None,
                    None,
                    0,
                    None,
                    reason=f"cannot start: {exc.strerror or exc}",
                )
            )
            return
        self.summaries[name].status = Status.RUNNING
        since = self.waiting_since.pop(name, None)
        waited = self.clock.monotonic() - since if since is not None else 0.0
        self.delays[(name, attempt)] = (waited, self.wait_reason.pop(name, None))
        locked = self.lock_since.pop(name, None)
        self.lock_reason.pop(name, None)
        self.lock_waits[(name, attempt)] = (
            self.clock.monotonic() - locked if locked is not None else 0.0
        )
        self.started_mono[(name, attempt)] = job.start_mono
        self.emit(
            ModuleStarted(name, attempt, job.ident, job.start, log_path, waited, job.start_mono)
        )

    def _next_retry_in(self) -> float | None:
        if not self.retrying or self.stop_signal is not None:
            return None
        return max(0.0, min(self.retrying.values()) - self.clock.monotonic())

    # ending ----------------------------------------------------------------------------

    def _on_finished(self, result: AttemptResult) -> None:
        name = result.name
        result.throttle_wait_s, result.throttle_reason = self.delays.pop(
            (name, result.attempt), (0.0, None)
        )
        result.lock_wait_s = self.lock_waits.pop((name, result.attempt), 0.0)
        result.start_mono = self.started_mono.pop((name, result.attempt), None)
        header = self.graph.modules[name].header
        self.locks.release(header.locks, name)
        summary = self.summaries[name]
        summary.attempts.append(result)
        if result.status == Status.FAILED and result.exit_code in header.warning_exit:
            result.status = Status.WARNING  # the module found something; it did not fail
        summary.status = result.status
        if (
            result.status in RETRYABLE
            and result.attempt <= header.retries
            and self.stop_signal is None
        ):
            result.retry_in = backoff(result.attempt, self.settings.retry_backoff)
            self.retrying[name] = self.clock.monotonic() + result.retry_in
            self.emit(ModuleFinished(result))
            return
        self.emit(ModuleFinished(result))
        self._settle(name, result.status)

    def _settle(self, name: str, status: Status) -> None:
        """A module is done for good: release or skip its dependents."""
        for skipped, reason in self.plan.finished(name, status):
            self._skip(skipped, reason)
        if status in FAILURES and self.settings.fail_fast and self.stop_signal is None:
            self._stop_starting(f"not started: --fail-fast after {name} {status.verb}")

    def _skip(self, name: str, reason: str) -> None:
        summary = self.summaries[name]
        summary.status, summary.reason = Status.SKIPPED, reason
        self.waiting_since.pop(name, None)  # it no longer waits for the gate or a lock
        self.wait_reason.pop(name, None)
        self.lock_since.pop(name, None)
        self.lock_reason.pop(name, None)
        self.emit(ModuleSkipped(name, reason))

    def _stop_starting(self, reason: str) -> None:
        """Start nothing new: skip what has not started; a pending retry ends as it is."""
        for name, why in self.plan.skip_rest(reason):
            self._skip(name, why)
        for name in list(self.retrying):
            del self.retrying[name]
            self._settle(name, self.summaries[name].status)

    def _on_signal(self, signum: int) -> None:
        sig = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if self.stop_signal is None:
                self.stop_signal = signum
                self.emit(Notice("SIGHUP: starting nothing new; running modules may finish"))
                self._stop_starting("not started: corral got SIGHUP")
            return
        if self.stop_signal in (signal.SIGINT, signal.SIGTERM):
            self.emit(Notice(f"{sig} again: killing every module now", warning=True))
            self._stop_running(now=True)
            return
        self.stop_signal = signum
        self.emit(
            Notice(
                f"{sig}: stopping every module (TERM, then KILL after the grace "
                "period; press Ctrl-C again to kill at once)",
                warning=True,
            )
        )
        self._stop_starting(f"not started: run interrupted by {sig}")
        self._stop_running()

    def _stop_running(self, now: bool = False) -> None:
        for attempt in list(self.executor.running):
            self.executor.stop(attempt, Status.INTERRUPTED, now)

    def _finish(self, started: float) -> RunFinished:
        ended = self.clock.time()
        modules = [self.summaries[n] for n in self.selection.names]
        # Makespan: first spawn to last exit, as a Gantt chart shows it, on the monotonic
        # clock (a wall-clock step during the run must not become part of it).
        attempts = [a for m in modules for a in m.attempts]
        makespan = (
            max(a.start_mono + a.duration_s for a in attempts) - min(a.start_mono for a in attempts)
            if attempts
            else 0.0
        )
        if self.stop_signal is not None:
            status, code = Status.INTERRUPTED, 128 + self.stop_signal
        elif any(m.status in FAILURES for m in modules):
            status, code = Status.FAILED, 1
        elif any(m.status == Status.WARNING for m in modules):
            status, code = Status.WARNING, EXIT_WARNING
        else:
            status, code = Status.OK, 0
        return RunFinished(
            self.settings.run_id,
            status,
            code,
            started,
            ended,
            makespan,
            self.settings.jobs,
            modules,
            _str(self.settings.log_dir),
            self.settings.dry_run,
            peak_load=self.peak_load,
            throttle_s=sum(a.throttle_wait_s for a in attempts),
            sampler_cpu_s=self.executor.sampling_cpu_s,
            supervisor_cpu_s=_own_cpu(),
        )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
