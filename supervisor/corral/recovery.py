"""What an earlier corral left when it was killed: mark its run crashed, stop leftovers.

A run row still `running` whose corral is gone (its PID is dead, or reused: the start
time differs, or the host rebooted: the boot id differs) crashed. Its attempts still
`running` become `interrupted` ("corral crashed"), and any of their process groups that
still exist with the recorded start time are stopped (TERM, then KILL). The watchdog
normally got there first; this is the second line, and it is what records the crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import time

from corral.executor import proc_start
from corral.records import boot_id, iso
from corral.store import Store


def alive(pid: int | None, started: int | None) -> bool:
    """True when `pid` runs and is the process that started at `started`."""
    return bool(pid) and proc_start(pid) is not None and proc_start(pid) == started


def recover(store: Store, grace: float = 5.0) -> list[str]:
    """Record crashed runs of this host and stop their leftovers; returns one message per
    crashed run found (none in the usual case)."""
    try:
        rows = store.conn.execute(
            "SELECT run_id, pid, pid_start, boot_id FROM runs WHERE status = 'running' "
            "AND host = ?", (socket.gethostname(),)).fetchall()
    except sqlite3.Error:
        return []
    this_boot = boot_id()
    messages = []
    for run_id, pid, pid_start, boot in rows:
        same_boot = boot == this_boot
        if same_boot and alive(pid, pid_start):
            continue  # another corral, still running
        attempts = store.conn.execute(
            "SELECT id, pgid, proc_start FROM module_runs WHERE run_id = ? AND "
            "status = 'running'", (run_id,)).fetchall()
        stopped = 0
        groups = [pgid for _, pgid, start in attempts if same_boot and alive(pgid, start)]
        for pgid in groups:
            for sig in (signal.SIGTERM, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
            stopped += 1
        deadline = time.monotonic() + grace
        while groups and time.monotonic() < deadline:
            groups = [g for g in groups if _exists(g)]
            time.sleep(0.05)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with store.write():
            store.conn.executemany(
                "UPDATE module_runs SET status = 'interrupted', reason = 'corral crashed' "
                "WHERE id = ?", [(row[0],) for row in attempts])
            store.conn.execute(
                "UPDATE runs SET status = 'crashed', ended = coalesce(ended, ?) "
                "WHERE run_id = ?", (iso(time.time()), run_id))
        why = "rebooted since" if not same_boot else f"PID {pid} is gone"
        messages.append(f"run {run_id} crashed ({why}): recorded {len(attempts)} unfinished "
                        f"module(s) as interrupted, stopped {stopped} leftover group(s)")
    return messages


def _exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
