"""The exception tree. Every message is written for the user who must fix it."""

from __future__ import annotations

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
