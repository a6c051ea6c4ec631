"""Bounded state: which runs to forget (`keep_runs:`, `keep_days:`), and forgetting them
(their rows in every table and their log directories). Applied at the end of every run
and by `corral prune`."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from corral.store import Store


@dataclass(frozen=True)
class Pruned:
    runs: list[str]  # run ids removed (or that would be, in a dry run)
    log_bytes: int  # bytes of log files removed with them


def prune(
    store: Store,
    log_dir: Path,
    keep_runs: int,
    keep_days: float,
    module_set: str | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Forget the runs beyond the newest `keep_runs` of each module set (of `module_set`
    only, when given) and those started more than `keep_days` ago; 0 turns either limit
    off. A run still marked running is never touched."""
    if not store.path:
        return Pruned([], 0)
    runs = store.conn.execute(
        "SELECT run_id, module_set, started FROM runs WHERE status != 'running' "
        + ("AND module_set = ? " if module_set is not None else "")
        + "ORDER BY started DESC",
        (module_set,) if module_set is not None else (),
    ).fetchall()
    cutoff = None
    if keep_days:
        try:
            cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=keep_days)).isoformat()
        except OverflowError:  # before the first representable date: nothing is that old
            cutoff = None
    seen: dict[str, int] = {}
    doomed = []
    for run_id, directory, started in runs:
        seen[directory] = seen.get(directory, 0) + 1
        if (keep_runs and seen[directory] > keep_runs) or (cutoff and (started or "") < cutoff):
            doomed.append(run_id)
    size = sum(_size(log_dir / run_id) for run_id in doomed)
    if dry_run or not doomed:
        return Pruned(doomed, size)
    store.forget_runs(doomed)
    for run_id in doomed:
        shutil.rmtree(log_dir / run_id, ignore_errors=True)
    return Pruned(doomed, size)


def _size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total
