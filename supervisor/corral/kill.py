"""Stopping processes: the one TERM → CONT → grace → KILL sequence corral uses.

TERM asks; CONT follows so a stopped process (Ctrl-Z, SIGSTOP) hears it; whatever is
still there after the grace period gets KILL. The local backend stops an attempt's
process group this way (its KILL comes from its wait loop, never from a sleep);
`stop` does the whole sequence at once on any `Target` (process groups and processes
for leftovers, `terminate`; a crashed run's cgroups, `cgroups.stop`); and the watchdog
(Bash, which must outlive corral) is handed `ASK` and `FORCE` by name (`names`), so
every copy of the sequence sends the signals defined here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from corral import procfs

ASK = (signal.SIGTERM, signal.SIGCONT)
"""The sequence's first step, in order: TERM asks, CONT lets a stopped process hear it."""
FORCE = signal.SIGKILL
"""The last step, for whatever is left after the grace period."""


def names(signals: tuple[signal.Signals, ...]) -> str:
    """`signals` as Bash's `kill -NAME` spells them, space-separated ("" for none)."""
    return " ".join(s.name.removeprefix("SIG") for s in signals)


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def signal_process(pid: int, signum: int) -> bool:
    """Signal one process; False when it no longer exists (with signal 0: or is a zombie)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return procfs.alive(pid) if signum == 0 else True


def ask_group(pgid: int) -> bool:
    """The sequence's first step (`ASK`: TERM, then CONT) for a group; False when it is gone."""
    first, *rest = ASK
    if not signal_group(pgid, first):
        return False
    for signum in rest:
        signal_group(pgid, signum)
    return True


class Target(Protocol):
    """Something the sequence stops: a process group, a process, an attempt's cgroup."""

    def ask(self) -> bool:
        """Send it `ASK`; False when it is already gone."""
        ...

    def alive(self) -> bool:
        """Whether anything of it is still there."""
        ...

    def force(self) -> None:
        """`FORCE` what is left of it."""
        ...


@dataclass(frozen=True, slots=True)
class Group:
    """A process group, by its id."""

    pgid: int

    def ask(self) -> bool:
        """`ask_group`; False when the group is gone."""
        return ask_group(self.pgid)

    def alive(self) -> bool:
        """Whether the group still has a member."""
        return signal_group(self.pgid, 0)

    def force(self) -> None:
        """KILL the group."""
        signal_group(self.pgid, FORCE)


@dataclass(frozen=True, slots=True)
class Process:
    """One process, by its id."""

    pid: int

    def ask(self) -> bool:
        """TERM, then CONT; False when the process is gone."""
        first, *rest = ASK
        if not signal_process(self.pid, first):
            return False
        for signum in rest:
            signal_process(self.pid, signum)
        return True

    def alive(self) -> bool:
        """Whether the process is there and not a zombie."""
        return signal_process(self.pid, 0)

    def force(self) -> None:
        """KILL the process."""
        signal_process(self.pid, FORCE)


def stop(
    targets: Iterable[Target],
    grace: float,
    reap: Callable[[], object] | None = None,
    tick: float = 0.02,
) -> None:
    """The sequence: `ASK` every target, wait up to `grace` seconds for them to go
    (looking every `tick`, calling `reap` meanwhile, so our own children do not linger
    as zombies), then `FORCE` what is left, in the order given. Returns at once when
    nothing is there."""
    live = [t for t in targets if t.ask()]
    end = time.monotonic() + grace
    while live and time.monotonic() < end:
        if reap is not None:
            reap()
        live = [t for t in live if t.alive()]
        if live:
            time.sleep(tick)
    for target in live:
        target.force()
    if reap is not None:
        reap()


def terminate(
    groups: list[int],
    pids: list[int],
    grace: float,
    reap: Callable[[], object] | None = None,
) -> None:
    """`stop` these process groups, then these processes (see `stop`)."""
    stop([*map(Group, groups), *map(Process, pids)], grace, reap)
