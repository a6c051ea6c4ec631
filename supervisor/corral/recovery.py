"""What an earlier corral left when it was killed: mark its run crashed, stop leftovers.

A run row still `running` whose corral is gone (its PID is dead, or reused: the start
time differs, or the host rebooted: the boot id differs) crashed. Its attempts still
`running` become `interrupted` ("corral crashed"), and everything left of them is
stopped: TERM and CONT, then KILL after the grace period. What belongs to the run is
what the kernel holds in the run's cgroups (recorded with the run; `cgroup.kill` or a
freeze reaches every process whatever it did to its environment), and, for a run that
had none, every process that still carries the run's mark (CORRAL_RUN_ID in its
environment). Never a recorded PID, so a reused PID is never killed. The run's cgroups
are removed once empty. The watchdog normally got there first; this is the second line,
and it is what records the crash.

A run that ended while a detached daemon (`detach: yes`) still held its attempt cgroup
recorded what it left (`runs.cgroups`); every start removes those that have emptied
since, and forgets them once nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time

from corral import cgroups
from corral.kill import terminate
from corral.procfs import boot_id, live_start_time, marked
from corral.records import iso
from corral.store import Store
from corral.units import plural


def alive(pid: int | None, started: int | None) -> bool:
    """True when `pid` runs (not a zombie) and is the process that started at `started`."""
    return bool(pid) and started is not None and live_start_time(pid) == started


def _gone(run: dict, host: str, this_boot: str | None) -> bool:
    """A run of this host marked `running` whose corral is gone (PID dead or reused, or
    the host rebooted since)."""
    return (
        run.get("status") == "running"
        and run.get("host") == host
        and (run.get("boot_id") != this_boot or not alive(run.get("pid"), run.get("pid_start")))
    )


def as_seen(runs: list[dict]) -> list[dict]:
    """`runs` rows as they are: a run of this host still marked `running` whose corral
    is gone shows as `crashed`, as the next run will record it. Rows of other hosts
    are left as they are."""
    host, this_boot = os.uname().nodename, boot_id()
    return [{**row, "status": "crashed"} if _gone(row, host, this_boot) else row for row in runs]


def attempts_as_seen(rows: list[dict]) -> list[dict]:
    """module_runs rows, each with its run's `run_status`, `run_host`, `run_pid`,
    `run_pid_start` and `run_boot_id` (taken out here), as they are: an attempt still
    `running` whose run has ended, or whose corral is gone, shows as `interrupted`
    ("corral crashed"), as the next start records it."""
    host, this_boot = os.uname().nodename, boot_id()
    for row in rows:
        run = {k: row.pop(f"run_{k}", None) for k in ("status", "host", "pid", "pid_start")}
        run["boot_id"] = row.pop("run_boot_id", None)
        if row.get("status") == "running" and (
            run["status"] not in ("running", None) or _gone(run, host, this_boot)
        ):
            row.update(status="interrupted", reason=row.get("reason") or "corral crashed")
    return rows


def fleet_as_seen(run: dict, hosts: list[dict] = ()) -> tuple[dict, list[dict]]:
    """A fleet_runs row (and its fleet_hosts rows) as they are: a fleet run of this host
    still marked `running` whose controller is gone shows as `crashed`, exit 70, and its
    hosts it never heard back from as `lost`, as the next start records them."""
    from corral.fleetrows import CONTROLLER_GONE

    if run.get("pid") is None or not _gone(run, os.uname().nodename, boot_id()):
        return run, list(hosts)
    run = {**run, "status": "crashed", "exit_code": CRASH_EXIT}
    hosts = [
        {**h, "status": "lost", "reason": CONTROLLER_GONE} if h["status"] == "pending" else h
        for h in hosts
    ]
    return run, hosts


def recover(store: Store, grace: float = 5.0) -> list[str]:
    """Record crashed runs of this host and stop their leftovers; returns one message per
    crashed run found (none in the usual case)."""
    try:
        rows = store.unfinished_runs(os.uname().nodename)
    except sqlite3.Error:
        return []
    this_boot = boot_id()
    messages = []
    for run_id, pid, pid_start, boot, dirs in rows:
        same_boot = boot == this_boot
        if same_boot and alive(pid, pid_start):
            continue  # another corral, still running
        bases = str(dirs).split(os.pathsep) if dirs else []
        found = cgroups.leftovers(bases) if same_boot else []
        # A `detach: yes` attempt's daemon may outlive corral: spared, as the watchdog
        # spared it (its cgroup goes once it is empty, see sweep).
        held = [cg for cg in found if not cg.detached()]
        stopped = cgroups.stop(held, grace) if held else 0
        spared = {p for cg in found if cg.detached() for p in cg.pids()}
        left = [p for p in marked(run_id) if p not in spared] if same_boot else []
        terminate([], left, grace)
        cgroups.remove_run(bases)
        try:
            unfinished = store.record_crash(run_id, iso(time.time()))
        except sqlite3.Error:
            continue  # the database cannot take it now: a later run records the crash
        why = "rebooted since" if not same_boot else f"PID {pid} is gone"
        gone = stopped + len(left)  # none: the watchdog had stopped them already
        messages.append(
            f"run {run_id} crashed ({why}): recorded {plural(unfinished, 'unfinished module')} "
            "as interrupted" + (f", stopped {plural(gone, 'leftover process')}" if gone else "")
        )
    sweep(store)
    return messages


CRASH_EXIT = 70  # a fleet run whose controller died: EX_SOFTWARE, as any error of corral


def end_dead_fleet_runs(store: Store, module_set: str) -> list[str]:
    """Called with the run lock of `module_set`'s directories held: a fleet run of that
    set still marked `running` has no controller (a live one would hold the lock), so it
    was killed (SIGKILL, the OOM killer, a reboot); its row ends as `crashed`, exit 70.
    Returns one message per run ended so; none when the database cannot say."""
    try:
        ended = store.end_running_fleet_runs(module_set, iso(time.time()), CRASH_EXIT)
    except sqlite3.Error:
        return []
    return [
        f"fleet run {run_id} crashed (its controller is gone): recorded as crashed"
        for run_id in ended
    ]


def sweep(store: Store) -> None:
    """Remove the emptied cgroups that ended runs of this host left (a detached daemon's,
    or a crashed run's that were still busy); a run's are forgotten once all are gone.
    Never touches a run still marked running: its corral may be alive."""
    try:
        rows = store.left_cgroups(os.uname().nodename)
    except sqlite3.Error:
        return
    gone = [run_id for run_id, dirs in rows if cgroups.remove_run(str(dirs).split(os.pathsep))]
    # removed all the same when this fails; the next start finds nothing there, tries again
    with contextlib.suppress(sqlite3.Error):
        if gone:
            store.forget_cgroups(gone)
