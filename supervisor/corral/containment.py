"""Everything an attempt starts belongs to it, and stops with it.

Where the host lets corral write cgroups, each attempt lives in its own from its first
instruction (cgroups.py), whatever it does to its session, process group or
environment, and stopping it is `cgroup.kill`. Where it does not (or `CORRAL_CGROUPS=0`
asks for the fallback), the attempt is its process group plus every descendant corral
has seen (as the subreaper, corral inherits orphans, and each sample walks the trees);
docs/reliability.md says what that cannot catch.

Either way a watchdog (watchdog.py) stops the run's attempts if corral dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field

from corral import procfs
from corral.cgroups import (
    FREEZER,
    V2,
    AttemptCgroup,
    Figures,
    RunCgroups,
    ready_command,
)
from corral.kill import signal_group, signal_process
from corral.watchdog import Watchdog


@dataclass(eq=False)
class Member:
    """One attempt as containment sees it."""

    key: str  # NAME.ATTEMPT, unique within the run
    detach: bool
    cgroup: AttemptCgroup | None = None
    pgid: int = 0
    known: dict[int, int] = field(default_factory=dict)  # fallback: pid -> start time

    def pids(self) -> list[int]:
        """Its live processes now (a cgroup's members, or what the fallback knows)."""
        if self.cgroup is not None:
            return self.cgroup.pids()
        return [p for p, start in self.known.items() if _start(p) == start]


class Containment:
    """The run's containment; `cgroups` is None on the fallback."""

    def __init__(self, run_id: str, grace: float, use_cgroups: bool | None = None):
        if use_cgroups is None:
            use_cgroups = os.environ.get("CORRAL_CGROUPS", "1") != "0"
        # The watchdog first, told each of the run's directories before it is made: a
        # SIGKILL of corral between making one and telling the watchdog left it to no
        # one (the run's row, which recovery reads, is written later still).
        self.watchdog = Watchdog(run_id, grace)
        self.cgroups = None
        try:
            if use_cgroups:
                run = RunCgroups(run_id, making=lambda base: self.watchdog.tell(f"base {base}"))
                self.cgroups = run if run.enabled else None
            bases = self.cgroups.bases if self.cgroups is not None else {}
            member = next(iter(bases.values()), "")
            freezer = bases.get(FREEZER, "") if V2 not in bases else ""
            if member:
                self.watchdog.tell(f"member {member}")
            if freezer:
                self.watchdog.tell(f"freezer {freezer}")
        except BaseException:  # (out of descriptors): its cgroups and watchdog go again
            if self.cgroups is not None:
                self.cgroups.close()
            self.watchdog.close()
            raise

    @property
    def counts_memory(self) -> bool:
        """True when the attempt cgroups give a memory figure (sampling then need not
        read PSS)."""
        return self.cgroups is not None and self.cgroups.counts_memory

    @property
    def kind(self) -> str:
        """What holds attempts together here: `cgroup` or `subreaper`."""
        return "cgroup" if self.cgroups is not None else "subreaper"

    def bases(self) -> list[str]:
        """The run's cgroup directories that exist now: all of them while it runs (what
        recovery looks in after a crash), after `close` those a detached daemon still
        holds (what the next start's recovery removes once they are empty)."""
        if self.cgroups is None:
            return []
        return [b for b in self.cgroups.bases.values() if os.path.isdir(b)]

    def prepare(self, name: str, attempt: int, detach: bool) -> tuple[list[str], Member]:
        """(the `cgroup.procs` files the attempt's bash enters, member) for one attempt;
        raises OSError when its cgroup cannot be made."""
        member = Member(f"{name}.{attempt}", detach)
        if self.cgroups is not None:
            member.cgroup = self.cgroups.attempt(name, attempt)
            member.key = os.path.basename(member.cgroup.path)
            if detach:
                self.watchdog.tell(f"spare {member.key}")
                member.cgroup.mark_detached()
        return (member.cgroup.procs_files() if member.cgroup is not None else []), member

    def prepare_ready(self, number: int) -> tuple[list[str], Member]:
        """(argv, member) of a bash that enters a fresh cgroup now and runs an attempt
        later (see `cgroups.ready_command`); only with cgroups."""
        cgroup = self.cgroups.attempt("ready", number)
        member = Member(os.path.basename(cgroup.path), False, cgroup)
        return ready_command(cgroup.procs_files()), member

    def assigned(self, member: Member, detach: bool) -> None:
        """A ready bash now runs an attempt."""
        member.detach = detach
        if detach:
            self.watchdog.tell(f"spare {member.key}")
            if member.cgroup is not None:
                member.cgroup.mark_detached()

    def started(self, member: Member, pid: int) -> None:
        """The attempt's main process `pid` started (and leads its process group)."""
        member.pgid = pid
        if member.cgroup is None:
            self.seen(member, [pid])

    def seen(self, member: Member, pids: list[int]) -> None:
        """The fallback's record of an attempt's processes (from a walk of its tree)."""
        if member.cgroup is not None:
            return
        for pid in pids:
            if pid not in member.known and (start := _start(pid)) is not None:
                member.known[pid] = start
                if not member.detach:
                    self.watchdog.tell(f"pid {pid} {start}")

    def signal(self, member: Member, signum: int) -> None:
        """`signum` to every process of the attempt (its group too, on the fallback)."""
        if member.cgroup is not None:
            member.cgroup.signal(signum)
            return
        signal_group(member.pgid, signum)
        for pid in member.pids():
            signal_process(pid, signum)

    def kill(self, member: Member) -> None:
        """SIGKILL the whole attempt."""
        if member.cgroup is not None:
            member.cgroup.kill()
        else:
            self.signal(member, signal.SIGKILL)

    def gone(self, member: Member) -> bool:
        """True once nothing the attempt started is alive (its main process reaped)."""
        if member.cgroup is not None:
            return not member.cgroup.populated()
        if member.pgid and signal_group(member.pgid, 0):
            return False
        return not any(procfs.alive(p) for p in member.pids())

    def figures(self, member: Member) -> Figures | None:
        """The kernel's totals for the whole attempt; None without a cgroup."""
        return member.cgroup.figures() if member.cgroup is not None else None

    def current_memory(self, member: Member) -> int | None:
        """The attempt's memory in use now, by its cgroup; None without one."""
        return member.cgroup.current_memory() if member.cgroup is not None else None

    def release(self, member: Member) -> None:
        """The attempt is over: remove its cgroup (kept while a detached daemon is in it)."""
        if member.cgroup is not None and self.cgroups is not None and member.cgroup.remove():
            with contextlib.suppress(ValueError):
                self.cgroups.attempts.remove(member.cgroup)

    def close(self) -> None:
        """Everything is stopped: remove the run's empty cgroups, dismiss the watchdog."""
        if self.cgroups is not None:
            self.cgroups.close()
        self.watchdog.close()


def _start(pid: int) -> int | None:
    fields = procfs.stat(pid)
    return int(fields[19]) if fields and fields[0] != b"Z" else None
