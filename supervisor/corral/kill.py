"""Stopping processes: the one TERM → CONT → grace → KILL sequence corral uses.

TERM asks; CONT follows so a stopped process (Ctrl-Z, SIGSTOP) hears it; whatever is
still there after the grace period gets KILL. The local backend stops an attempt's
process group this way (its KILL comes from its wait loop, never from a sleep), and
`terminate` does the whole sequence at once for leftovers and crashed runs.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from corral import procfs


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
    """The sequence's first step for a group: TERM, then CONT; False when it is gone."""
    if not signal_group(pgid, signal.SIGTERM):
        return False
    signal_group(pgid, signal.SIGCONT)
    return True


def terminate(
    groups: list[int],
    pids: list[int],
    grace: float,
    reap: Callable[[], object] | None = None,
) -> None:
    """TERM and CONT every group and process, wait up to `grace` seconds for them to go
    (calling `reap` meanwhile, so our own children do not linger as zombies), then KILL
    what is left. Returns at once when nothing is there."""
    groups = [g for g in groups if ask_group(g)]
    alive = []
    for pid in pids:
        if signal_process(pid, signal.SIGTERM):
            signal_process(pid, signal.SIGCONT)
            alive.append(pid)
    end = time.monotonic() + grace
    while (groups or alive) and time.monotonic() < end:
        if reap is not None:
            reap()
        groups = [g for g in groups if signal_group(g, 0)]
        alive = [p for p in alive if signal_process(p, 0)]
        if groups or alive:
            time.sleep(0.02)
    for g in groups:
        signal_group(g, signal.SIGKILL)
    for pid in alive:
        signal_process(pid, signal.SIGKILL)
    if reap is not None:
        reap()
