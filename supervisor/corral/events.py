"""What a run tells its listeners: one typed message per thing that happened.

The scheduler emits these; the terminal printers, the JSON collector and the store
recorder are listeners (callables taking one event). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.status import Status

if TYPE_CHECKING:
    from corral.throttle import Jobs, Refusal


@dataclass(slots=True)  # perf: one per attempt, on the spawn path (docs/architecture.md)
class AttemptResult:
    """One execution of one module, as it ended."""

    name: str
    attempt: int
    status: Status
    exit_code: int | None  # None when a signal ended it
    signal: int | None
    start: float  # wall clock, seconds since the epoch
    end: float
    duration_s: float  # monotonic
    pid: int
    cpu_user_s: float | None = None  # None: unknown (nothing could measure it)
    cpu_sys_s: float | None = None
    peak_rss_bytes: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    log_path: str | None = None
    log_bytes: int = 0
    log_dropped_bytes: int = 0
    log_incomplete: bool = False
    reason: str = ""
    throttle_wait_s: float = 0.0
    throttle_reason: Refusal | None = None  # why the gate held it back last
    lock_wait_s: float = 0.0
    lock_reason: str | None = None  # which locks it waited on, held by whom
    retry_in: float | None = None  # seconds until the next attempt; None when final
    start_mono: float | None = None  # monotonic clock at the start (durations, offsets)
    mem_source: str | None = None  # where each figure came from: cgroup, rusage, sampled
    cpu_source: str | None = None
    io_source: str | None = None


@dataclass
class RunStarted:
    """A run began: its modules in order, --jobs, where logs go, its edges, expected
    durations and locks."""

    run_id: str
    started: float
    names: list[str]
    jobs: Jobs
    log_dir: str | None
    dry_run: bool = False
    edges: list[tuple[str, str]] = field(default_factory=list)  # (module, what it waits on)
    expected: dict[str, float] = field(default_factory=dict)  # median durations, history
    locks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # module -> its locks


@dataclass
class ModuleStarted:
    """An attempt of a module started; `pid` is what the backend calls it (a process id
    on this host), recorded, never used by the scheduler."""

    name: str
    attempt: int
    pid: int
    start: float
    log_path: str | None
    throttle_wait_s: float = 0.0
    start_mono: float | None = None


@dataclass
class ModuleOutput:
    """One line a running module wrote (on stderr when `err`)."""

    name: str
    line: bytes  # one line without its newline (or a last line without one)
    err: bool = False  # the module wrote it on stderr


@dataclass
class ModuleFinished:
    """An attempt ended; `result` says how (and whether a retry follows)."""

    result: AttemptResult


@dataclass
class ModuleSkipped:
    """A module will not run in this run, and why."""

    name: str
    reason: str


@dataclass
class Notice:
    """Something the user should know that is not about one module (a signal, a warning)."""

    message: str
    warning: bool = False


@dataclass
class Waiting:
    """The gate holds back ready modules (reason), or stopped doing so (reason None)."""

    reason: Refusal | None
    modules: list[str]


@dataclass
class LockWaiting:
    """A ready module waits for a lock another module holds ('lock apt held by x')."""

    name: str
    reason: str


@dataclass
class Sampled:
    """One host sample, with how many modules ran and waited at that moment."""

    sample: object  # sampler.HostSample (events import nothing of corral's)
    running: int
    waiting: int
    gate: Refusal | None


@dataclass
class Leftovers:
    """Processes modules left running at the end of the run: (module, attempt) -> count.
    Stopped unless the module declares `detach: yes`."""

    counts: dict[tuple[str, int], int]
    detached: set[str]


@dataclass
class Idle:
    """The scheduler is about to wait: listeners flush what they buffered."""


@dataclass(slots=True)
class ModuleSummary:
    """A module's outcome in the run: its last attempt, or why it never ran."""

    name: str
    status: Status
    attempts: list[AttemptResult] = field(default_factory=list)
    reason: str = ""

    @property
    def last(self) -> AttemptResult | None:
        """Its last attempt; None when it never started."""
        return self.attempts[-1] if self.attempts else None


@dataclass
class RunFinished:
    """A run ended: its status and exit code, its times and every module's summary."""

    run_id: str
    status: Status
    exit_code: int
    started: float
    ended: float
    makespan_s: float
    jobs: Jobs
    modules: list[ModuleSummary]
    log_dir: str | None
    dry_run: bool = False
    peak_load: float = 0.0
    throttle_s: float = 0.0
    sampler_cpu_s: float = 0.0
    supervisor_cpu_s: float = 0.0


Event = (
    RunStarted
    | ModuleStarted
    | ModuleOutput
    | ModuleFinished
    | ModuleSkipped
    | Notice
    | Waiting
    | LockWaiting
    | Sampled
    | Leftovers
    | Idle
    | RunFinished
)
Listener = Callable[[Event], None]
