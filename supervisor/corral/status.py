"""The vocabulary of outcomes: a module's status, and its named groups.

A status is a `str` (a StrEnum), so it is stored, printed and compared as its value
("ok", "failed" ...) and nothing downstream changes when it is written. Imports
nothing of corral's.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a module is in a run; every status but RUNNING is final."""

    OK = "ok"
    WARNING = "warning"  # ended with an exit code its header declares (`warning-exit:`)
    FAILED = "failed"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    RUNNING = "running"

    @property
    def verb(self) -> str:
        """How a sentence says it happened: 'requires x, which timed out'."""
        return _VERBS[self]


_VERBS = {
    Status.OK: "succeeded",
    Status.WARNING: "warned",
    Status.FAILED: "failed",
    Status.TIMEOUT: "timed out",
    Status.INTERRUPTED: "was interrupted",
    Status.SKIPPED: "was skipped",
    Status.RUNNING: "is running",
}

# The statuses a module can end a run with.
FINAL = frozenset(s for s in Status if s is not Status.RUNNING)
# Final statuses that fail the run and skip the modules that require it.
FAILURES = frozenset({Status.FAILED, Status.TIMEOUT, Status.INTERRUPTED, Status.SKIPPED})
# Final statuses of a module that did its work: its dependents run, its duration counts.
COMPLETED = frozenset({Status.OK, Status.WARNING})
# How an attempt may end and still be retried (`retries:`).
RETRYABLE = frozenset({Status.FAILED, Status.TIMEOUT})

# A run's exit code when every module completed and at least one ended with a warning
# (beside 0 ok, 1 failed, 2 usage, 3 locked, 4 fleet hosts, 128+N signals).
EXIT_WARNING = 5
