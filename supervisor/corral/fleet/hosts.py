"""The fleet's vocabulary: how a host ends, what a host's run tells its listeners.

A host in a fleet run is one attempt of the fleet backend (`corral.backends.fleet`):
its whole `corral run` there. The scheduler sees it as an attempt that ended ok,
warned or failed; what a person and the records need is finer (unreachable, lost,
locked ...), so the backend keeps a `HostResult` per host, decides its status with
`classify` and tells the fleet's listeners (the live view, the recorder) with the
events below. Nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Host statuses (the fleet JSON's `status`).
OK, FAILED, UNREACHABLE, LOST, LOCKED, SKIPPED = (
    "ok",
    "failed",
    "unreachable",
    "lost",
    "locked",
    "skipped",
)
PENDING, RUNNING = "pending", "running"
HOST_PROBLEMS = frozenset({UNREACHABLE, LOST, LOCKED, SKIPPED})  # fleet exit code 4
SSH_FAILED = 255
WARNED = 5  # a run's exit code: every module completed, one or more with a warning


@dataclass
class HostResult:
    """One host in a fleet run: how it ended, and what it is doing while it runs."""

    host: str
    status: str = PENDING
    exit_code: int | None = None
    reason: str = ""
    run: dict | None = None
    started: float | None = None  # wall clock
    ended: float | None = None
    since: float = 0.0  # monotonic start, for the live view
    connected: bool = False
    shipped: bool = False
    need_ship: bool = False
    stopped: bool = False  # the controller stopped it (a signal): the run goes on there
    result: dict | None = None
    error: str = ""
    stderr: deque = field(default_factory=lambda: deque(maxlen=5))
    running: dict[str, float] = field(default_factory=dict)  # module -> monotonic start
    done_modules: int = 0
    failed_modules: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        """How the host ended, as `--json` gives it (host, status, exit_code, reason, run)."""
        return {
            "host": self.host,
            "status": self.status,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "run": self.run,
        }


# Events for the fleet's listeners (the live view, the recorder) --------------------------


@dataclass
class HostStarted:
    """A host's run was started."""

    host: HostResult


@dataclass
class HostProgress:
    """A module on a host started or ended (as the host's agent relayed it)."""

    host: HostResult
    module: str
    attempt: int
    status: str
    duration_s: float | None


@dataclass
class HostRecords:
    """One run of a host with its attempt rows, as the host recorded them."""

    host: str
    record: dict


@dataclass
class HostFinished:
    """A host's run ended; `host` says how."""

    host: HostResult


@dataclass
class FleetTick:
    """Every host as it stands now, for the status line."""

    hosts: dict[str, HostResult]


FleetEvent = HostStarted | HostProgress | HostRecords | HostFinished | FleetTick


def classify(r: HostResult, rc: int | None) -> tuple[str, str]:
    """How a host whose connection closed with `rc` (None: killed, no status) ended,
    from what its agent said: (status, reason). Pure."""
    said = r.stderr[-1] if r.stderr else ""
    if r.result is not None:
        r.exit_code = code = r.result.get("rc")
        r.run = r.result.get("run")
        run_err = [x for x in r.result.get("stderr") or [] if x.strip()]
        if code == 0:
            return OK, ""
        if code == WARNED and r.run is not None:  # all completed, some warned
            warned = [m["name"] for m in r.run.get("modules", []) if m["status"] == "warning"]
            return OK, "warning: " + ", ".join(warned)
        if code == 3:
            return LOCKED, (run_err[-1] if run_err else "another corral run holds the lock")
        if code == 1 and r.run is not None:
            bad = [m for m in r.run.get("modules", []) if m["status"] not in ("ok", "warning")]
            return FAILED, "; ".join(
                f"{m['name']} {m['status']}" + (f" ({m['reason']})" if m.get("reason") else "")
                for m in bad
            )
        return FAILED, (run_err[-1] if run_err else f"corral exited {code}")
    if r.stopped:
        return LOST, (
            "the controller was interrupted; the run goes on there (corral fleet gather)"
            if r.connected
            else "the controller was interrupted before the host answered; it may have "
            "started (corral fleet gather)"
        )
    if r.connected:
        return LOST, (
            f"connection lost while running ({said or f'exit {rc}'}); the run goes on "
            "there: corral fleet gather brings its records"
        )
    if r.error:  # what the host's shell said besides (tar's own words, say)
        return FAILED, f"{r.error}: {said}" if said and said not in r.error else r.error
    if rc == SSH_FAILED or rc is None:
        return UNREACHABLE, said or "ssh could not connect"
    return FAILED, f"corral could not start (exit {rc}): {said}" if said else f"exit {rc}"


def fleet_exit_code(results: list[HostResult], stopped: int | None = None) -> int:
    """0 all ok; 4 a host unreachable, lost, locked or skipped (wins over 1); 1 a module
    failed somewhere; 5 all completed and a module warned somewhere (as a local run);
    128+N when the controller was stopped by signal N."""
    if stopped is not None:
        return 128 + stopped
    if any(r.status in HOST_PROBLEMS for r in results):
        return 4
    if any(r.status != OK for r in results):
        return 1
    if any(r.exit_code == WARNED for r in results):
        return WARNED
    return 0
