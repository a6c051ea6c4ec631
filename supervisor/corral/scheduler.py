"""The run loop: what may start now (dependencies, --jobs, locks), retries, signals.

The scheduler never touches a process (the executor does) and never decides what
depends on what (the plan does); it connects the two and tells listeners.
"""

from __future__ import annotations

import os
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
)
from corral.executor import Spec
from corral.graph import Graph, Plan, Selection

MAX_BACKOFF = 60.0
IDLE = Idle()


@dataclass(frozen=True)
class RunSettings:
    """The parts of the config the loop needs."""

    run_id: str
    jobs: int
    fail_fast: bool = False
    pools: dict | None = None
    retry_backoff: float = 1.0
    log_dir: Path | None = None  # this run's log directory; None: no logs (dry run)
    env: dict | None = None  # base environment of every module
    dry_run: bool = False


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

    def __init__(self, graph: Graph, selection: Selection, settings: RunSettings,
                 executor, emit: Callable[[Event], None]):
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
        self._paths = {n: os.path.abspath(graph.modules[n].path) for n in selection.names}

    def run(self) -> RunFinished:
        started = time.time()
        self.emit(RunStarted(self.settings.run_id, started, list(self.selection.names),
                             self.settings.jobs, _str(self.settings.log_dir),
                             self.settings.dry_run))
        executor, plan = self.executor, self.plan
        # First start as many ready modules as --jobs and the locks allow (retries due
        # first); then wait for an exit, a signal or the next retry, and account for it.
        while plan.more_to_do():
            if self.stop_signal is None:
                self._start_retries()
                room = self.settings.jobs - len(executor.running)
                for name in plan.take_ready(self._admit, room):
                    self._start(name, 1)
            if not executor.running and not self.retrying and not plan.ready():
                break  # nothing can happen any more (only after a stop)
            self.emit(IDLE)
            wake = executor.wait(self._next_retry_in())
            for signum in wake.signals:
                self._on_signal(signum)
            for result in wake.finished:
                self._on_finished(result)
        return self._finish(started)

    # starting --------------------------------------------------------------------------

    def _admit(self, name: str) -> bool:
        return self.locks.acquire(self.graph.modules[name].header.locks)

    def _start_retries(self) -> None:
        now = time.monotonic()
        for name, when in sorted(self.retrying.items(), key=lambda kv: kv[1]):
            if when > now or len(self.executor.running) >= self.settings.jobs:
                break
            if self._admit(name):
                del self.retrying[name]
                self._start(name, len(self.summaries[name].attempts) + 1)

    def _start(self, name: str, attempt: int) -> None:
        module = self.graph.modules[name]
        log_dir = self.settings.log_dir
        log_path = None
        if log_dir is not None:
            log_path = str(log_dir / (f"{name}.log" if attempt == 1 else
                                      f"{name}.{attempt}.log"))
        env = self._env.copy()
        env["CORRAL_MODULE"] = name
        env["CORRAL_ATTEMPT"] = str(attempt)
        spec = Spec(name, self._paths[name], attempt, env, log_path,
                    module.header.timeout, module.header.detach)
        try:
            job = self.executor.start(spec)
        except OSError as exc:
            now = time.time()
            self._on_finished(AttemptResult(name, attempt, FAILED, None, None, now, now, 0.0,
                                            0.0, 0.0, 0, 0, 0, 0, None,
                                            reason=f"cannot start: {exc.strerror or exc}"))
            return
        self.summaries[name].status = "running"
        self.emit(ModuleStarted(name, attempt, job.pid, job.start, log_path))

    def _next_retry_in(self) -> float | None:
        if not self.retrying or self.stop_signal is not None:
            return None
        return max(0.0, min(self.retrying.values()) - time.monotonic())

    # ending ----------------------------------------------------------------------------

    def _on_finished(self, result: AttemptResult) -> None:
        name = result.name
        header = self.graph.modules[name].header
        self.locks.release(header.locks)
        summary = self.summaries[name]
        summary.attempts.append(result)
        summary.status = result.status
        if (result.status in (FAILED, TIMEOUT) and result.attempt <= header.retries
                and self.stop_signal is None):
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
        self.emit(Notice(f"{sig}: stopping every module (TERM, then KILL after the grace "
                         "period; press Ctrl-C again to kill at once)", warning=True))
        self._stop_starting(f"not started: run interrupted by {sig}")
        self.executor.stop_all(INTERRUPTED)

    def _finish(self, started: float) -> RunFinished:
        ended = time.time()
        modules = [self.summaries[n] for n in self.selection.names]
        # Makespan: first spawn to last exit, as a Gantt chart shows it.
        attempts = [a for m in modules for a in m.attempts]
        makespan = (max(a.end for a in attempts) - min(a.start for a in attempts)
                    if attempts else 0.0)
        if self.stop_signal is not None and self.stop_signal != signal.SIGHUP:
            status, code = INTERRUPTED, 128 + self.stop_signal
        elif self.stop_signal == signal.SIGHUP:
            status, code = INTERRUPTED, 128 + signal.SIGHUP
        elif all(m.status == OK for m in modules):
            status, code = OK, 0
        else:
            status, code = FAILED, 1
        return RunFinished(self.settings.run_id, status, code, started, ended,
                           makespan, self.settings.jobs, modules,
                           _str(self.settings.log_dir), self.settings.dry_run)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
