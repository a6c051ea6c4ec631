"""The scripted backend: attempts end as a script says, on a clock that only it moves.

For the scheduler's tests (tests/test_scheduler.py): attempt N of each module ends with
a scripted result after a scripted time; signals arrive at scripted times; the host
figures the gate reads are whatever the test sets. `wait` jumps the clock straight to
the next thing that happens, so a history of minutes replays in microseconds, with no
process and no sleep. Not in the registry: a user cannot choose it.

    clock = FakeClock()
    fake = FakeExecutor(clock, {"a": [Ends(2.0, exit=1), Ends(1.0)]}, signals=[(5.0, SIGHUP)])
    Scheduler(graph, selection, settings, fake, emit, clock=clock).run()
    fake.started  # [(0.0, "a", 1), (3.0, "a", 2)]
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from corral.events import AttemptResult
from corral.executor import Spec, Wakeup
from corral.sampler import HostSample
from corral.status import Status
from corral.throttle import Host

EPOCH = 1_800_000_000.0  # the fake wall clock's zero


class FakeClock:
    """A clock that stands still until `advance`; an `executor.Clock`."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def monotonic(self) -> float:
        """The scripted time, in seconds since the run began (0.0 at first)."""
        return self.now

    def time(self) -> float:
        """The wall clock: EPOCH plus the scripted time."""
        return EPOCH + self.now

    def advance(self, to: float) -> None:
        """Move to `to` (never back)."""
        self.now = max(self.now, to)


@dataclass(frozen=True)
class Ends:
    """How one attempt ends: after `after` seconds, with `exit` (0 ok, else failed), or
    killed by `signal`. An attempt with no script line runs 1 s and exits 0."""

    after: float = 1.0
    exit: int = 0
    signal: int | None = None
    rss: int = 0  # what `sample` reports it holds
    load: float | None = None  # what `sample` reports it adds to the runnable count


@dataclass(eq=False)
class FakeAttempt:
    """A scripted attempt (an `executor.Attempt`)."""

    spec: Spec
    ident: int
    start: float
    start_mono: float
    ends: Ends
    end_at: float  # when it ends: its script, or a stop
    cause: Status | None = None
    stop_signal: int | None = None
    rss: int = 0
    load: float | None = None


@dataclass
class FakeExecutor:
    """An `executor.Executor` that replays a script. `started`, `stopped` and `waits`
    record what the scheduler did, for the test to check."""

    clock: FakeClock
    script: dict[str, list[Ends]] = field(default_factory=dict)
    signals: list[tuple[float, int]] = field(default_factory=list)  # (when, signum)
    grace: float = 5.0  # after a TERM, a stopped attempt ends this much later …
    obeys_term: bool = True  # … unless it ignores TERM (then only KILL ends it)
    fail_start: set[str] = field(default_factory=set)  # modules whose start raises OSError
    cpus: int = 4
    host: Host = field(default_factory=Host)  # what the gate reads; the test may change it
    measures: bool = True  # False: `sample` returns None, as the dry run's does
    sampling_cpu_s: float = 0.0
    leftovers: dict[tuple[str, int], int] = field(default_factory=dict)
    started: list[tuple[float, str, int]] = field(default_factory=list)  # (t, name, attempt)
    stopped: list[tuple[float, str, Status, bool]] = field(default_factory=list)
    waits: int = 0
    _attempts: dict[int, FakeAttempt] = field(default_factory=dict)
    _next: int = 1

    def __post_init__(self) -> None:
        self.signals = sorted(self.signals)

    @property
    def running(self):
        """The attempts started and not yet returned by `wait` (a live view)."""
        return self._attempts.values()

    def __enter__(self) -> FakeExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._attempts.clear()

    def start(self, spec: Spec) -> FakeAttempt:
        """An attempt that ends as the script's line for it says (with none: after 1 s,
        exit 0); OSError for a module in `fail_start`."""
        if spec.name in self.fail_start:
            raise OSError(2, "No such file or directory")
        lines = self.script.get(spec.name, [])
        ends = lines[spec.attempt - 1] if spec.attempt <= len(lines) else Ends()
        now = self.clock.now
        end_at = now + ends.after
        attempt = FakeAttempt(spec, self._next, self.clock.time(), now, ends, end_at)
        if spec.timeout is not None and ends.after > spec.timeout:
            # the timeout stops it: TERM at the deadline, then it ends as stopped
            attempt.cause = Status.TIMEOUT
            attempt.stop_signal = 15
            attempt.end_at = now + spec.timeout + (0.0 if self.obeys_term else self.grace)
        self._attempts[self._next] = attempt
        self._next += 1
        self.started.append((now, spec.name, spec.attempt))
        return attempt

    def wait(self, timeout: float | None) -> Wakeup:
        """Jump to the next end or signal, or by `timeout`; raises when nothing can ever
        happen and no timeout was given (the real loop would hang there)."""
        self.waits += 1
        times = [a.end_at for a in self._attempts.values()]
        if self.signals:
            times.append(self.signals[0][0])
        if timeout is not None:
            times.append(self.clock.now + timeout)
        if not times:
            raise RuntimeError("stuck: wait() with nothing running, no signal, no timeout")
        self.clock.advance(min(times))
        out = Wakeup()
        while self.signals and self.signals[0][0] <= self.clock.now:
            out.signals.append(heapq.heappop(self.signals)[1])
        for ident, a in list(self._attempts.items()):
            if a.end_at <= self.clock.now:
                del self._attempts[ident]
                out.finished.append(self._result(a))
        return out

    def stop(self, attempt: FakeAttempt, cause: Status, now: bool = False) -> None:
        """Record the stop; the attempt ends as `cause` (its first) at once (`now`, or
        obeying TERM) or after the grace period, never later than it would have."""
        self.stopped.append((self.clock.now, attempt.spec.name, cause, now))
        attempt.cause = attempt.cause or cause
        if now:
            attempt.stop_signal = 9
            attempt.end_at = min(attempt.end_at, self.clock.now)
        elif attempt.stop_signal is None:
            attempt.stop_signal = 15
            grace = 0.0 if self.obeys_term else self.grace
            attempt.end_at = min(attempt.end_at, self.clock.now + grace)

    def sample(self) -> HostSample | None:
        """The script's figures become each attempt's measurement; the host sample is
        `host` as the test set it."""
        if not self.measures:
            return None
        for a in self._attempts.values():
            a.rss, a.load = a.ends.rss, a.ends.load
        h = self.host
        load = h.others_avg or 0.0
        return HostSample(
            self.clock.now,
            self.clock.time(),
            load,
            int(load),
            load,
            0.0,
            h.mem_total or 0,
            h.mem_available or 0,
            0,
            h.psi_cpu,
            h.psi_mem,
            None,
            load,
        )

    def _result(self, a: FakeAttempt) -> AttemptResult:
        ran = self.clock.now - a.start_mono
        signal = a.stop_signal if a.cause else a.ends.signal
        exit_code = None if signal else a.ends.exit
        status = a.cause or (Status.OK if exit_code == 0 else Status.FAILED)
        return AttemptResult(
            name=a.spec.name,
            attempt=a.spec.attempt,
            status=status,
            exit_code=exit_code,
            signal=signal,
            start=a.start,
            end=a.start + ran,
            duration_s=ran,
            cpu_user_s=0.0,
            cpu_sys_s=0.0,
            peak_rss_bytes=a.rss,
            read_bytes=0,
            write_bytes=0,
            pid=a.ident,
        )
