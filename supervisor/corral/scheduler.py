"""The run loop: start what may start, wait, account for what ended; retries, backoff,
fail-fast, signals, skip propagation.

The scheduler never touches a process (the executor does), never decides what depends
on what (the plan does) nor whether the place can take one more (the admission, with
the gate, does); it connects them and tells listeners what happened.
"""

from __future__ import annotations

import hashlib
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.admission import Admission, Expectations, Waited
from corral.errors import ResourceError, exhausted
from corral.events import (
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
from corral.executor import Clock, Executor, Spec
from corral.graph import Graph, Plan, Selection
from corral.status import EXIT_WARNING, FAILURES, RETRYABLE, Status
from corral.throttle import Jobs, Limits
from corral.units import written

# A stop policy: told of each module that settled for good (its final status), it says
# why nothing new may start from now on, or None. `fail_fast` (--fail-fast) is one; the
# fleet's canary gate and --max-fail are another (corral.fleet.rollout).
StopPolicy = Callable[[str, Status], str | None]

MAX_BACKOFF = 60.0
LONG_WAIT_S = 60.0  # a module held back this long is said on stderr, in every output mode
NAME_MAX = 255  # bytes in one file name (Linux)
IDLE = Idle()


@dataclass(frozen=True)
class RunSettings:
    """The parts of the config the loop needs."""

    run_id: str
    jobs: Jobs
    stop_when: StopPolicy | None = None  # when to start nothing new (--fail-fast …)
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
    deadline: float | None = None  # seconds the whole run may take (--deadline)
    # monotonic time the run began: the deadline counts from then, a wait for the run
    # lock included (None: from the scheduler's start)
    begun: float | None = None
    # module -> why the place can never start it (memory: above the host's): it fails at
    # once, so nothing waits for ever on it
    never: dict | None = None
    long_wait: float = LONG_WAIT_S  # (tests lower it to see the notice without the wait)


def fail_fast(name: str, status: Status) -> str | None:
    """--fail-fast: the first module that settles as a failure stops every start."""
    return f"not started: --fail-fast after {name} {status.verb}" if status in FAILURES else None


def log_name(name: str, attempt: int) -> str:
    """The log file of one attempt: NAME.log, then NAME@2.log … No module name holds
    an '@', so module `a.2` and attempt 2 of `a` never share a log; a name too long for
    a file name (255 bytes) is cut and made unique again by a digest of the whole."""
    suffix = ".log" if attempt == 1 else f"@{attempt}.log"
    if len(name.encode()) + len(suffix) <= NAME_MAX:
        return name + suffix
    digest = hashlib.blake2b(name.encode(), digest_size=8).hexdigest()
    keep = name.encode()[: NAME_MAX - len(suffix) - len(digest) - 1].decode(errors="ignore")
    return f"{keep}~{digest}{suffix}"


def backoff(attempt: int, base: float) -> float:
    """Delay before attempt `attempt + 1`: base, 2×base, 4×base … capped at a minute."""
    return min(base * 2 ** (attempt - 1), MAX_BACKOFF)


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
        self._deadline_at: float | None = None  # monotonic; None once it has passed
        self.deadline_passed = False
        self.plan = Plan(selection, graph)
        self.admission = Admission(
            self.plan,
            graph,
            executor,
            clock,
            settings.jobs,
            Limits(settings.jobs, executor.cpus, settings.max_load, settings.min_free_mem),
            settings.pools,
            Expectations(settings.peak_rss or {}, settings.cpu_rate or {}),
            emit,
        )
        self.summaries = {n: ModuleSummary(n, Status.SKIPPED) for n in selection.names}
        self.retrying: dict[str, float] = {}  # name -> monotonic time of its next attempt
        self.waited: dict[str, Waited] = {}  # the running attempt's wait before it started
        self.stop_signal: int | None = None  # SIGINT/SIGTERM/SIGHUP once received
        self._env = dict(settings.env or {})
        self._sampling = True  # until the executor says it has nothing to measure
        self.started_mono: dict[str, float] = {}  # the running attempt's monotonic start
        self._next_sample = 0.0
        self._log_dir = None if settings.log_dir is None else str(settings.log_dir)
        self.peak_load = 0.0
        self._long_waits_at = 0.0  # monotonic: when a held module may next be overdue

    def run(self) -> RunFinished:
        """Run the selection to its end (or a stop); raises RuntimeError("stuck …") only
        on a bug: a state no event can change while work is left."""
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
        executor, plan, admission = self.executor, self.plan, self.admission
        if self.settings.deadline is not None:
            begun = self.settings.begun
            begun = self.clock.monotonic() if begun is None else begun
            self._deadline_at = begun + self.settings.deadline
        if self.settings.never:
            for name in self.selection.names:
                why = self.settings.never.get(name)
                if why is not None and name in plan.pending:
                    self._fail_at_once(name, why)
        # Measure the place when due; start what the admission allows (retries due
        # first, then ready modules by priority, within --jobs, the locks and the gate);
        # then wait for an exit, a signal, the next retry or the next sample. perf: after
        # an exit, what it released starts before the place is measured (on the last
        # sample, at most one interval old): a sample is not on the way from an exit to
        # a spawn (docs/architecture.md).
        ended = False
        while plan.more_to_do():
            if not ended:
                self._sample_if_due()
            self._check_deadline()
            taken = False
            if self.stop_signal is None:
                refused_before = admission.refusal
                news: list[ModuleStarted] = []
                try:
                    for name in admission.take(self._due_retries()):
                        event = self._start(name, len(self.summaries[name].attempts) + 1)
                        taken = True
                        if event is not None:
                            news.append(event)
                finally:  # perf: said once all have started, not between (and always)
                    for event in news:
                        self.emit(event)
                if admission.refusal != refused_before:
                    self.emit(Waiting(admission.refusal, admission.holding()))
                self._tell_long_waits()
            if ended:
                self._sample_if_due()
            if not executor.running and not self.retrying and not admission.gate_holds():
                if self.stop_signal is not None or not plan.more_to_do():
                    break  # stopped (what has not started never will), or all settled
                if taken:  # what was taken could not start (and ended): take the next
                    continue
                # Nothing runs, nothing is due for a retry, the gate holds nothing back,
                # and still something is left: no event can ever change that.
                raise RuntimeError(
                    f"stuck: nothing runs and nothing can start, yet {plan.describe()}; "
                    "this is a bug in corral"
                )
            self.emit(IDLE)
            wake = executor.wait(self._timeout())
            for notice in wake.notices:
                self.emit(Notice(notice, warning=True))
            for signum in wake.signals:
                self._on_signal(signum)
            for result in wake.finished:
                self._on_finished(result)
            ended = bool(wake.finished)
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
            Sampled(
                sample,
                len(self.executor.running),
                self.admission.held_back(),
                self.admission.refusal,
            )
        )

    def _check_deadline(self) -> None:
        """Past the run's deadline: skip what has not started, stop what runs as for a
        timeout (TERM, then KILL after the grace period)."""
        if self._deadline_at is None or self.clock.monotonic() < self._deadline_at:
            return
        self._deadline_at = None
        took = written(self.settings.deadline or 0.0)
        self.emit(
            Notice(
                f"the run's deadline ({took}) passed: stopping what runs as for a timeout; "
                "what has not started is skipped",
                warning=True,
            )
        )
        self.deadline_passed = True
        self._stop_starting(f"not started: the run's deadline ({took}) passed")
        for attempt in list(self.executor.running):
            self.executor.stop(attempt, Status.TIMEOUT)

    def _tell_long_waits(self) -> None:
        """No silent hang: a module held back by a lock or by the place for longer than
        `long_wait` is said once, on stderr, whatever the output mode."""
        if not self.admission.held:
            return
        now = self.clock.monotonic()
        if now < self._long_waits_at:
            return
        limit = self.settings.long_wait
        overdue, self._long_waits_at = self.admission.overdue(now, limit)
        took = "a minute" if limit == LONG_WAIT_S else written(limit)
        for reason, names in overdue.items():
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if names[4:] else "")
            self.emit(Notice(f"waiting for more than {took}: {reason} ({shown})", warning=True))

    def _timeout(self) -> float | None:
        """Until the next retry, the run's deadline, the next sample while modules run or
        wait, or when a held module's wait becomes long."""
        timeouts = [t for t in (self._next_retry_in(),) if t is not None]
        if self.admission.held and self.stop_signal is None:
            timeouts.append(max(0.0, self._long_waits_at - self.clock.monotonic()))
        if self._deadline_at is not None:
            timeouts.append(max(0.0, self._deadline_at - self.clock.monotonic()))
        if self._sampling and (self.executor.running or self.admission.gate_holds()):
            timeouts.append(max(0.0, self._next_sample - self.clock.monotonic()))
        return min(timeouts) if timeouts else None

    # starting --------------------------------------------------------------------------

    def _due_retries(self) -> list[str]:
        """Modules whose next attempt is due, the longest due first; [] when none."""
        if not self.retrying:
            return []
        now = self.clock.monotonic()
        return [n for n, when in sorted(self.retrying.items(), key=lambda kv: kv[1]) if when <= now]

    def _start(self, name: str, attempt: int) -> ModuleStarted | None:
        """Start `name`'s attempt; its ModuleStarted, for the caller to emit (None when it
        could not start: its end is emitted here)."""
        self.retrying.pop(name, None)
        module = self.graph.modules[name]
        log_path = None if self._log_dir is None else f"{self._log_dir}/{log_name(name, attempt)}"
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
            short = exhausted(exc, spawn=True)
            if short is not None:  # corral's own want, not the module's: the run stops
                raise ResourceError(
                    f"{short}: corral could not start {name}; the run stops (what runs is "
                    "stopped, the rest is not started)"
                ) from exc
            self.started_mono[name] = self.clock.monotonic()
            why = f"cannot start: {exc.strerror or exc}"
            self._on_finished(_not_started(name, attempt, self.clock.time(), why))
            return None
        self.summaries[name].status = Status.RUNNING
        waited = self.waited[name] = self.admission.started(name)
        self.started_mono[name] = job.start_mono
        return ModuleStarted(
            name, attempt, job.ident, job.start, log_path, waited.gate_s, job.start_mono
        )

    def _fail_at_once(self, name: str, why: str) -> None:
        """`name` can never start here: it fails now, without an attempt to retry, and
        its requirers are skipped (it holds no lock and the gate never saw it)."""
        result = _not_started(name, 1, self.clock.time(), f"cannot start: {why}")
        result.start_mono = self.clock.monotonic()
        summary = self.summaries[name]
        summary.attempts.append(result)
        summary.status = Status.FAILED
        self.emit(ModuleFinished(result))
        self._settle(name, Status.FAILED)

    def _next_retry_in(self) -> float | None:
        if not self.retrying or self.stop_signal is not None:
            return None
        return max(0.0, min(self.retrying.values()) - self.clock.monotonic())

    # ending ----------------------------------------------------------------------------

    def _on_finished(self, result: AttemptResult) -> None:
        name = result.name
        if self.deadline_passed and result.status == Status.TIMEOUT and not result.reason:
            result.reason = "stopped: the run's deadline passed"
        waited = self.waited.pop(name, None) or self.admission.started(name)
        result.throttle_wait_s, result.throttle_reason = waited.gate_s, waited.refusal
        result.lock_wait_s, result.lock_reason = waited.lock_s, waited.lock_reason
        result.start_mono = self.started_mono.pop(name, None)
        header = self.graph.modules[name].header
        self.admission.ended(name)
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
        policy = self.settings.stop_when
        if policy is not None and self.stop_signal is None:
            reason = policy(name, status)
            if reason is not None:
                self._stop_starting(reason)

    def _skip(self, name: str, reason: str) -> None:
        summary = self.summaries[name]
        summary.status, summary.reason = Status.SKIPPED, reason
        self.admission.forget(name)
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


def _not_started(name: str, attempt: int, now: float, reason: str) -> AttemptResult:
    """A failed attempt that never ran: nothing was measured (unknown, never 0)."""
    return AttemptResult(
        name=name,
        attempt=attempt,
        status=Status.FAILED,
        exit_code=None,
        signal=None,
        start=now,
        end=now,
        duration_s=0.0,
        pid=0,
        reason=reason,
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
