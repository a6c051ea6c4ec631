"""The exception tree. Every message is written for the user who must fix it."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from corral.visible import text


class CorralError(Exception):
    """Base of every error corral reports without a traceback. As a string it is one
    line a terminal shows but does not obey: the names in it (files, directories,
    hosts) may hold escape sequences or line breaks, made visible (`visible.text`)."""

    exit_code = 2

    def __str__(self) -> str:
        return text(super().__str__())


@dataclass(frozen=True)
class Problem:
    """One finding about a file: `FILE:LINE: message`, an error or a warning."""

    path: str | Path | None
    line: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        """One line, the file's name and the message made visible (`visible.text`)."""
        where = f"{self.path}:{self.line}: " if self.path is not None else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return text(f"{where}{prefix}{self.message}")


class HeaderError(CorralError):
    """One or more header, name or graph errors; `problems` holds them all, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)  # one visible line each


class UsageError(CorralError):
    """Bad flags, config or targets."""


class LockHeld(CorralError):
    """Another run holds the modules directory's lock."""

    exit_code = 3


class RunLockError(CorralError):
    """The run lock cannot be taken: its directory cannot be made or its file created
    (a full or read-only filesystem). Nothing runs: without the lock two runs could
    overlap."""


class StoreError(CorralError):
    """The database cannot give what a command reads from it (history, docs, cache)."""

    exit_code = 1


class ResourceError(CorralError):
    """corral itself ran out of something the system rations (descriptors, memory,
    processes): not a module's fault nor a bug; the run stops (EX_OSERR)."""

    exit_code = 71


# What ran out, by errno, and which limit says how much there is.
_EXHAUSTED = {
    errno.EMFILE: ("too many open files", "RLIMIT_NOFILE", "ulimit -n"),
    errno.ENFILE: ("the system's table of open files is full", None, "fs.file-max"),
    errno.ENOMEM: ("out of memory", "RLIMIT_AS", "ulimit -v"),
    errno.EAGAIN: ("too many processes", "RLIMIT_NPROC", "ulimit -u"),
}


def exhausted(exc: BaseException | None, spawn: bool = False) -> str | None:
    """What `exc` (or an exception it was raised from or during) says ran out, with the
    limit that decides it ('too many open files (the limit is 20: ulimit -n)'); None
    when it is no exhaustion of the system's resources. EAGAIN counts only from a
    `spawn` (elsewhere it means "try again")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        why = None
        if (
            isinstance(exc, MemoryError)
            or isinstance(exc, ImportError)
            and ("failed to map segment" in str(exc) or "Cannot allocate memory" in str(exc))
        ):
            why = _EXHAUSTED[errno.ENOMEM]
        elif isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            why = ("cannot start a thread (out of memory or processes)", "RLIMIT_AS", "ulimit -v")
        elif (
            isinstance(exc, OSError)
            and exc.errno in _EXHAUSTED
            and (exc.errno != errno.EAGAIN or spawn)
        ):
            why = _EXHAUSTED[exc.errno]
        if why is not None:
            return f"{why[0]}{_limit(why[1], why[2])}"
        exc = exc.__cause__ or exc.__context__
    return None


def _limit(name: str | None, how: str) -> str:
    import resource

    soft = None
    if name is not None:
        try:
            soft = resource.getrlimit(getattr(resource, name))[0]
        except (OSError, ValueError, AttributeError):
            soft = None
    if soft is None or soft == resource.RLIM_INFINITY:
        return f" (see {how})"
    if name == "RLIMIT_AS":
        return f" (the address-space limit is {soft >> 20} MiB: {how}, in KiB)"
    return f" (the limit is {soft}: {how})"
