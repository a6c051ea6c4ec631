"""The run loop: what may start now (dependencies, --jobs, locks), retries, signals.

The scheduler never touches a process (the executor does) and never decides what
depends on what (the plan does); it connects the two and tells listeners.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.events import (
    FAILED,
    INTERRUPTED,
    OK,
    SKIPPED,
    TIMEOUT,
    AttemptResult,
    Event,
    Idle,
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
from corral.executor import Spec
from corral.graph import Graph, Plan, Selection
from corral.sampler import HostSampler, TreeUsage, process_tree, tree_usage
from corral.throttle import Host, Limits, Running, admit

MAX_BACKOFF = 60.0
CONTAIN_AFTER_S = 1.0  # an attempt this old moves into its own cgroup, where there are
IDLE = Idle()


@dataclass(frozen=True)
class RunSettings:
    """The parts of the config the loop needs."""

    run_id: str
    jobs: int | None  # None: --jobs auto
    fail_fast: bool = False
    pools: dict | None = None
    retry_backoff: float = 1.0
    log_dir: Path | None = None  # this run's log directory; None: no logs (dry run)
    env: dict | None = None  # base environment of every module
    dry_run: bool = False
    max_load: float | None = None
    min_free_mem: int = 0
    sample_interval: float = 0.2
    peak_rss: dict | None = None  # measured peaks from history: the memory estimate
    cpu_rate: dict | None = None  # CPUs each module kept busy, from history


def backoff(attempt: int, base: float) -> float:
    """Delay before attempt `attempt + 1`: base, 2×base, 4×base … capped at a minute."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF)


class Locks:
    """Named pools: at most `size` holders each (1 unless config `pools:` says more)."""

    def __init__(self, sizes: dict[str, int] | None = None):
        self.sizes = sizes or {}
        self.held: dict[str, int] = {}

    def acquire(self, names: tuple[str, ...]) -> bool:
        """Take every lock in `names`, or none of them; False when one is full."""
        if any(self.held.get(n, 0) >= self.sizes.get(n, 1) for n in names):
            return False
        for n in names:
            self.held[n] = self.held.get(n, 0) + 1
        return True

    def release(self, names: tuple[str, ...]) -> None:
        for n in names:
            self.held[n] -= 1


class Scheduler:
    """Runs one selection through an executor; `run()` returns the RunFinished event."""

    def __init__(
        self,
        graph: Graph,
        selection: Selection,
        settings: RunSettings,
        executor,
        emit: Callable[[Event], None],
    ):
        self.graph = graph
        self.selection = selection
        self.settings = settings
        self.executor = executor
        self.emit = emit
        self.plan = Plan(selection, graph)
        self.locks = Locks(settings.pools)
        self.summaries = {n: ModuleSummary(n, SKIPPED) for n in selection.names}
        self.retrying: dict[str, float] = {}  # name -> monotonic time of its next attempt
        self.stop_signal: int | None = None  # SIGINT/SIGTERM/SIGHUP once received
        self._env = dict(settings.env if settings.env is not None else os.environ)
        # Absolute now: the executor changes directory to each module's before spawning.
        dirs: dict[str, str] = {}
        self._paths = {}
        for n in selection.names:
            given, file = os.path.split(graph.modules[n].path)
            if given not in dirs:
                dirs[given] = os.path.abspath(given)
            self._paths[n] = os.path.join(dirs[given], file)
        self.sampler = None if settings.dry_run else HostSampler()
        cpus = self.sampler.cpus if self.sampler else (os.cpu_count() or 1)
        self.limits = Limits(settings.jobs, cpus, settings.max_load, settings.min_free_mem)
        self.usage: dict[int, TreeUsage] = {}  # pid -> sampled tree figures
        self.waiting_since: dict[str, float] = {}  # refused by the gate since (monotonic)
        self.wait_reason: dict[str, str] = {}
        self.delays: dict[tuple[str, int], tuple[float, str | None]] = {}
        self.gate_reason: str | None = None  # why the best ready module waits, if it does
        self.lock_since: dict[str, float] = {}  # ready but its lock was held, since
        self.lock_waits: dict[tuple[str, int], float] = {}
        self._batch: list[Running] = []  # admitted in this pass, not yet running
        self._next_sample = 0.0
        self._host_now = Host()  # the last sample, as the gate reads it
        self._log_dir = None if settings.log_dir is None else str(settings.log_dir)
        self.peak_load = 0.0

    def run(self) -> RunFinished:
        started = time.time()
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
            )
        )
        executor, plan = self.executor, self.plan
        try:
            # Sample the host when due; start as many ready modules as --jobs, the locks
            # and the gate allow (retries due first); then wait for an exit, a signal, the
            # next retry or the next sample, and account for it.
            while plan.more_to_do():
                self._sample_if_due()
                if self.stop_signal is None:
                    self._batch = []
                    refused_before = self.gate_reason
                    self.gate_reason = None
                    self._start_retries()
                    room = (self.settings.jobs or len(self.selection.names)) - len(executor.running)
                    for name in plan.take_ready(self._admit, room):
                        self._start(name, 1)
                    if self.gate_reason != refused_before:
                        self.emit(Waiting(self.gate_reason, sorted(self.waiting_since)))
                if not executor.running and not self.retrying and not plan.ready():
                    break  # nothing can happen any more (only after a stop)
                self.emit(IDLE)
                wake = executor.wait(self._timeout())
                for signum in wake.signals:
                    self._on_signal(signum)
                for result in wake.finished:
                    self._on_finished(result)
        finally:
            if self.sampler is not None:
                self.sampler.close()
        return self._finish(started)

    # sampling --------------------------------------------------------------------------

    def _sample_if_due(self) -> None:
        if self.sampler is None:
            return
        now = time.monotonic()
        if now < self._next_sample:
            return
        self._next_sample = now + self.settings.sample_interval
        sample = self.sampler.sample()
        self._host_now = Host(
            sample.runnable_avg,
            sample.mem_available,
            sample.mem_total,
            sample.psi_cpu,
            sample.psi_mem,
        )
        self.peak_load = max(self.peak_load, sample.runnable_avg, sample.load1)
        for pid, job in list(self.executor.running.items()):
            tree = process_tree(pid)
            self.usage[pid] = tree_usage(pid, self.usage.get(pid), tree)
            # Moving processes between cgroups stalls the kernel's forks for milliseconds
            # (an RCU grace period): only attempts that have run a while are worth it.
            if job.cgroup is None and now - job.start_mono >= CONTAIN_AFTER_S:
                self.executor.contain(job, tree)
        self.emit(
            Sampled(sample, len(self.executor.running), len(self.waiting_since), self.gate_reason)
        )

    def _timeout(self) -> float | None:
        """Until the next retry, or the next sample while modules run or wait."""
        timeouts = [t for t in (self._next_retry_in(),) if t is not None]
        if self.sampler is not None and (self.executor.running or self.waiting_since):
            timeouts.append(max(0.0, self._next_sample - time.monotonic()))
        return min(timeouts) if timeouts else None

    def _running(self) -> list[Running]:
        now = time.monotonic()
        out = list(self._batch)
        for pid, job in self.executor.running.items():
            header = self.graph.modules[job.spec.name].header
            usage = self.usage.get(pid)
            rate = (
                usage.cpu_rate
                if usage and usage.cpu_rate is not None
                else self._cpu_rate(job.spec.name)
            )
            out.append(
                Running(
                    header.workload,
                    now - job.start_mono,
                    self._memory_need(job.spec.name),
                    usage.rss if usage else 0,
                    rate,
                )
            )
        return out

    def _cpu_rate(self, name: str) -> float:
        """Expected CPUs busy before it is measured: history, else 1 if declared cpu."""
        known = (self.settings.cpu_rate or {}).get(name)
        if known is not None:
            return known
        return 1.0 if self.graph.modules[name].header.workload == "cpu" else 0.0

    def _memory_need(self, name: str) -> int:
        declared = self.graph.modules[name].header.memory
        if declared:
            return declared
        return int((self.settings.peak_rss or {}).get(name, 0))

    # starting --------------------------------------------------------------------------

    def _admit(self, name: str) -> bool:
        """The gate, then the locks; a refusal by the gate is remembered as a delay."""
        header = self.graph.modules[name].header
        if self.settings.jobs is not None and (
            len(self.executor.running) + len(self._batch) >= self.settings.jobs
        ):
            return False
        reason = admit(
            self._running(),
            self.limits,
            self._host_now,
            header.workload,
            self._memory_need(name),
            declared=bool(header.memory),
        )
        if reason is not None:
            self.waiting_since.setdefault(name, time.monotonic())
            self.wait_reason[name] = reason
            self.gate_reason = self.gate_reason or reason
            return False
        if not self.locks.acquire(header.locks):
            self.lock_since.setdefault(name, time.monotonic())
            return False
        self._batch.append(
            Running(header.workload, 0.0, self._memory_need(name), 0, self._cpu_rate(name))
        )
        return True

    def _start_retries(self) -> None:
        now = time.monotonic()
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
            self._paths[name],
            attempt,
            env,
            log_path,
            module.header.timeout,
            module.header.detach,
        )
        try:
            job = self.executor.start(spec)
        except OSError as exc:
            now = time.time()
            self._on_finished(
                AttemptResult(
                    name,
                    attempt,
                    FAILED,
                    None,
                    None,
                    now,
                    now,
                    0.0,
                    0.0,
                    0.0,
                    0,
                    0,
                    0,
                    0,
                    None,
                    reason=f"cannot start: {exc.strerror or exc}",
                )
            )
            return
        self.summaries[name].status = "running"
        since = self.waiting_since.pop(name, None)
        waited = time.monotonic() - since if since is not None else 0.0
        self.delays[(name, attempt)] = (waited, self.wait_reason.pop(name, None))
        locked = self.lock_since.pop(name, None)
        self.lock_waits[(name, attempt)] = time.monotonic() - locked if locked else 0.0
        self.emit(ModuleStarted(name, attempt, job.pid, job.start, log_path, waited))

    def _next_retry_in(self) -> float | None:
        if not self.retrying or self.stop_signal is not None:
            return None
        return max(0.0, min(self.retrying.values()) - time.monotonic())

    # ending ----------------------------------------------------------------------------

    def _on_finished(self, result: AttemptResult) -> None:
        name = result.name
        usage = self.usage.pop(result.pid, None)
        if usage is not None:  # the sampled tree can exceed the kernel's per-process peak
            result.peak_rss_bytes = max(result.peak_rss_bytes, usage.peak_rss)
            result.read_bytes = max(result.read_bytes, usage.read_bytes)
            result.write_bytes = max(result.write_bytes, usage.write_bytes)
        result.throttle_wait_s, result.throttle_reason = self.delays.pop(
            (name, result.attempt), (0.0, None)
        )
        result.lock_wait_s = self.lock_waits.pop((name, result.attempt), 0.0)
        header = self.graph.modules[name].header
        self.locks.release(header.locks)
        summary = self.summaries[name]
        summary.attempts.append(result)
        summary.status = result.status
        if (
            result.status in (FAILED, TIMEOUT)
            and result.attempt <= header.retries
            and self.stop_signal is None
        ):
            result.retry_in = backoff(result.attempt, self.settings.retry_backoff)
            self.retrying[name] = time.monotonic() + result.retry_in
            self.emit(ModuleFinished(result))
            return
        self.emit(ModuleFinished(result))
        self._settle(name, result.status)

    def _settle(self, name: str, status: str) -> None:
        """A module is done for good: release or skip its dependents."""
        for skipped, reason in self.plan.finished(name, ok=status == OK, status=status):
            self._skip(skipped, reason)
        if status != OK and self.settings.fail_fast and self.stop_signal is None:
            verb = {TIMEOUT: "timed out", INTERRUPTED: "was interrupted"}.get(status, "failed")
            self._stop_starting(f"not started: --fail-fast after {name} {verb}")

    def _skip(self, name: str, reason: str) -> None:
        summary = self.summaries[name]
        summary.status, summary.reason = SKIPPED, reason
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
            self.executor.stop_all(INTERRUPTED, now=True)
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
        self.executor.stop_all(INTERRUPTED)

    def _finish(self, started: float) -> RunFinished:
        ended = time.time()
        modules = [self.summaries[n] for n in self.selection.names]
        # Makespan: first spawn to last exit, as a Gantt chart shows it.
        attempts = [a for m in modules for a in m.attempts]
        makespan = (
            max(a.end for a in attempts) - min(a.start for a in attempts) if attempts else 0.0
        )
        if self.stop_signal is not None:
            status, code = INTERRUPTED, 128 + self.stop_signal
        elif all(m.status == OK for m in modules):
            status, code = OK, 0
        else:
            status, code = FAILED, 1
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
            sampler_cpu_s=self.sampler.cpu_spent if self.sampler else 0.0,
            supervisor_cpu_s=_own_cpu(),
        )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
