"""The seam between the scheduler and the place modules run: what a backend implements.

The scheduler decides what may start and when; an `Executor` runs attempts somewhere
and says when they end. The scheduler uses the members declared here and nothing else:
it never sees a process id, a /proc path, a cgroup or a host name. Backends live in
`corral.backends` (one module each, named in its registry); `docs/architecture.md`
lists what a new one needs.

Nothing here runs anything: these are the types both sides agree on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from corral.events import AttemptResult
from corral.status import Status
from corral.throttle import Host

if TYPE_CHECKING:
    from corral.sampler import HostSample

# (module, one line without its newline, whether it came from stderr)
LineListener = Callable[[str, bytes, bool], None]


class Clock(Protocol):
    """Where the scheduler reads the time: the `time` module itself, or a test's clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations and deadlines."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the epoch, for stored timestamps only."""
        ...


@dataclass(frozen=True, slots=True)
class Spec:
    """What to start: one attempt of one module. No host assumptions: the path is the
    module's file as the modules directory names it, the environment is complete."""

    name: str
    path: str
    attempt: int
    env: dict[str, str]  # the whole environment the module sees
    log_path: str | None = None  # None: no log (dry run)
    timeout: float | None = None  # seconds; None: none
    detach: bool = False  # may leave a daemon behind


@dataclass(slots=True)
class Wakeup:
    """What one `Executor.wait` saw: attempts that ended and signals corral received
    (SIGINT, SIGTERM, SIGHUP). Both empty: a timeout, or only output arrived."""

    finished: list[AttemptResult] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # warnings for the user (said once)


@runtime_checkable
class Attempt(Protocol):
    """A started attempt, as the scheduler may read it (the backend's own object)."""

    spec: Spec
    start: float  # wall clock when it started (stored), seconds since the epoch
    start_mono: float  # monotonic, for its age

    @property
    def ident(self) -> int:
        """The place's number for it, recorded as `pid` (the local backend: its process
        id); the scheduler passes it on and never uses it."""
        ...

    @property
    def rss(self) -> int:
        """Bytes it holds now; 0 until measured."""
        ...

    @property
    def load(self) -> float | None:
        """Runnable tasks it adds to the place's load (its processes, averaged over about
        a second), as last measured; None until measured."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Runs attempts somewhere. A context manager: entering takes the program's signals
    (see `corral.signals`), leaving stops and reaps whatever is left.

    Contract, as the scheduler relies on it:
    - `start` returns at once; it raises OSError when the attempt cannot start (the
      scheduler records a failed attempt "cannot start: …").
    - every started attempt ends exactly once in some `wait`'s `finished`, also when
      stopped; its `status` is the backend's verdict (ok, failed, or the stop's cause).
    - `wait` blocks until an attempt ends, a signal arrives or `timeout` passes (None:
      no timeout); it enforces `Spec.timeout` itself and never polls.
    - `running` is a live view: an attempt is in it from `start` until it is returned
      by `wait`.
    """

    cpus: int  # CPUs of the place: what --jobs auto budgets for
    sampling_cpu_s: float  # CPU seconds spent measuring the place so far
    # after leaving: processes attempts left behind, (module, attempt) -> how many
    leftovers: dict[tuple[str, int], int]

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...

    @property
    def running(self) -> Collection[Attempt]:
        """The attempts started and not yet returned by `wait`."""
        ...

    @property
    def host(self) -> Host:
        """The place's figures as the gate reads them (its load, its free memory), from
        the last `sample`; all None before one, or where nothing is measured."""
        ...

    def start(self, spec: Spec) -> Attempt:
        """Start one attempt; raises OSError when it cannot."""
        ...

    def wait(self, timeout: float | None) -> Wakeup:
        """Block until attempts end, a signal arrives or `timeout` seconds pass."""
        ...

    def stop(self, attempt: Attempt, cause: Status, now: bool = False) -> None:
        """Stop one attempt, which will end as `cause`: TERM, then KILL after the grace
        period, or KILL at once with `now`. A second call only hurries it."""
        ...

    def sample(self) -> HostSample | None:
        """Measure the place and every running attempt now; None when the place has
        nothing to measure (the dry run), and the scheduler stops asking."""
        ...
