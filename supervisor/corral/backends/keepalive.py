"""Keeping the run's watchdog alive (`corral.watchdog`): without one, a SIGKILL of
corral would leave the modules running. The local backend continues a stopped one
(with every sample) and replaces a dead one (as it reaps it)."""

from __future__ import annotations

import contextlib
import os
import signal

from corral import procfs
from corral.errors import ResourceError, exhausted
from corral.watchdog import Watchdog


def continue_if_stopped(pid: int | None) -> bool:
    """Continue the watchdog `pid` if another process stopped it (SIGSTOP); True when
    it was stopped. False without a watchdog (None)."""
    fields = procfs.stat(pid) if pid is not None else None
    if fields and fields[0] == b"T":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        return True
    return False


def replace(watchdog: Watchdog, status: int) -> str:
    """The watchdog died (reaped with wait status `status`): start another, told what
    the first knew; returns the notice for the user. Raises ResourceError when none can
    be started (the run stops: what runs is stopped and recorded)."""
    how = os.waitstatus_to_exitcode(status)
    how = f"killed by signal {-how}" if how < 0 else f"exit {how}"
    try:
        watchdog.restart()
    except OSError as exc:
        short = exhausted(exc) or exc.strerror or str(exc)
        raise ResourceError(
            f"the watchdog ({how}) died and no other could be started: {short}; "
            "the run stops (what runs is stopped, the rest is not started)"
        ) from exc
    return f"the watchdog ({how}) died before the run ended; started another"
