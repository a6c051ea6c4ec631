"""The dry-run backend: starts nothing; every attempt succeeds at once.

`corral run --dry-run` drives the real scheduler through it, so the order it prints
is the order a run would take (with --jobs, locks and dependencies, but no gate: there
is nothing to measure). Signals still stop it, as they would a run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from corral.events import AttemptResult
from corral.executor import Spec, Wakeup
from corral.signals import Signals
from corral.status import Status
from corral.throttle import Host


@dataclass(eq=False, slots=True)
class DryAttempt:
    """A pretended attempt (an `executor.Attempt`)."""

    spec: Spec
    ident: int
    start: float
    start_mono: float
    cause: Status | None = None
    rss: int = 0
    load: float | None = None


class DryRunExecutor:
    """An `executor.Executor` that runs nothing. Use as a context manager."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self.sampling_cpu_s = 0.0
        self.host = Host()
        self.leftovers: dict[tuple[str, int], int] = {}
        self._attempts: dict[int, DryAttempt] = {}
        self._next = 1
        self._signals = Signals()

    @property
    def running(self):
        """The attempts started and not yet returned by `wait` (a live view)."""
        return self._attempts.values()

    def __enter__(self) -> DryRunExecutor:
        self._signals.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._attempts.clear()
        self._signals.__exit__()

    def start(self, spec: Spec) -> DryAttempt:
        """Start nothing: an attempt the next `wait` returns as succeeded (or as the
        cause it was stopped with)."""
        attempt = DryAttempt(spec, self._next, time.time(), time.monotonic())
        self._attempts[attempt.ident] = attempt
        self._next += 1
        return attempt

    def wait(self, timeout: float | None = None) -> Wakeup:
        """Every started attempt ends now; with none, wait for a signal or `timeout`."""
        if not self._attempts:
            return Wakeup(signals=self._signals.wait(timeout))
        done = [_result(a) for a in self._attempts.values()]
        self._attempts.clear()
        return Wakeup(finished=done, signals=self._signals.read())

    def stop(self, attempt: DryAttempt, cause: Status, now: bool = False) -> None:
        """The attempt ends as `cause` (its first cause, if stopped twice)."""
        attempt.cause = attempt.cause or cause

    def sample(self) -> None:
        """Nothing to measure: always None."""
        return None


def _result(a: DryAttempt) -> AttemptResult:
    return AttemptResult(
        name=a.spec.name,
        attempt=a.spec.attempt,
        status=a.cause or Status.OK,
        exit_code=None if a.cause else 0,
        signal=None,
        start=a.start,
        end=a.start,
        duration_s=0.0,
        cpu_user_s=0.0,
        cpu_sys_s=0.0,
        peak_rss_bytes=0,
        read_bytes=0,
        write_bytes=0,
        pid=a.ident,
    )


def open_executor(place) -> DryRunExecutor:
    """The registry's constructor (see corral.backends)."""
    return DryRunExecutor()
