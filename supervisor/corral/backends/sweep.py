"""The local backend's end-of-run sweep: what attempts left behind once every attempt
is over (leftover daemons, escapees), counted per attempt in `leftovers` and stopped
(`kill.terminate`), unless its module may detach. Runs once per run, never per attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from corral import procfs
from corral.cgroups import RunCgroups
from corral.kill import terminate

Leftovers = dict[tuple[str, int], int]  # (module, attempt) -> processes it left


def stop_marked(
    run_id: str | None,
    groups: dict[int, tuple[str, bool]],
    given_up: set[int],
    watchdog_pid: Callable[[], int | None],
    grace: float,
    leftovers: Leftovers,
    reap: Callable[[], object],
) -> None:
    """The fallback (no cgroups): stop everything still carrying this run's mark, by
    module (process-group members, setsid escapees, nohup'ed daemons alike), and the
    attempts' process groups (`groups`: pgid -> (module, may it detach)), sparing what a
    module may leave and what no signal ends (`given_up`)."""
    found = procfs.marked(run_id) if run_id else {}
    detached = {name for name, detach in groups.values() if detach}
    orphans = [
        (pid, pgid)
        for pid, pgid in procfs.children_of_self()
        if pgid not in groups and pgid not in (os.getpgrp(), watchdog_pid())
    ]
    unknown = [pid for pid, _ in orphans if pid not in found]
    if unknown and run_id:
        # A process in the middle of exec has no readable environment for a moment:
        # look again before treating it as nobody's (a detached daemon must survive).
        time.sleep(0.05)
        found.update(procfs.marked(run_id, unknown))
    for pid in given_up:  # no signal ends them (_abandon): said once already
        found.pop(pid, None)
    orphans = [(pid, pgid) for pid, pgid in orphans if pid not in given_up]
    for name, attempt in found.values():
        key = (name, attempt)
        leftovers[key] = leftovers.get(key, 0) + 1
    pids = [pid for pid, (name, _) in found.items() if name not in detached]
    spared = {pid for pid, (name, _) in found.items() if name in detached}
    stopped = [pgid for pgid, (_, detach) in groups.items() if not detach]
    stopped += [pgid for pid, pgid in orphans if pid not in spared]
    terminate(stopped, pids, grace, reap=reap)


def stop_escapees(
    cgroups: RunCgroups,
    run_id: str | None,
    given_up: set[int],
    watchdog_pid: Callable[[], int | None],
    grace: float,
    leftovers: Leftovers,
    reap: Callable[[], object],
) -> None:
    """Stop what left its attempt's cgroup. Only root can (a module writing its PID
    into another cgroup's cgroup.procs), and what did is still marked by the kernel
    as corral's: once what started it has ended, it is reparented to corral, the
    subreaper, whatever it did to its session or environment. Every child of corral
    at the end of the run but the watchdog and a detached attempt's daemons (in
    their cgroups) is such an escapee, and is stopped as leftovers are."""
    for _ in range(3):  # what an escapee forked is reparented once it is stopped
        spared = {p for cg in cgroups.attempts if cg.detached() for p in cg.pids()}
        spared |= given_up  # no signal ends them (_abandon): said once already
        escapees = [
            pid
            for pid, _ in procfs.children_of_self()
            if pid != watchdog_pid() and pid not in spared
        ]
        if not escapees:
            return
        for name, attempt in procfs.marked(run_id, escapees).values():
            key = (name, attempt)
            leftovers[key] = leftovers.get(key, 0) + 1
        terminate([], escapees, grace, reap=reap)
