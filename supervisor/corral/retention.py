"""Bounded state: which runs to forget (`keep_runs:`, `keep_days:`), and forgetting them
(their rows in every table and their log directories). Applied at the end of every run,
fleet run and gather, and by `corral prune`."""

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
    """What pruning removed (or would remove, in a dry run)."""

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
    """Forget the runs beyond the newest `keep_runs` and those started more than
    `keep_days` ago; 0 turns either limit off. The newest are counted apart for each of
    this machine's module sets, for the fleet runs of each, and for each host's runs
    that fleet runs gathered (keep_runs per host). With `module_set`, only that set's:
    this machine's runs of it, its fleet runs and what they gathered (and gathered runs
    whose fleet run is gone), each host's counted among those. A run still marked
    running is never touched; only this machine's runs have log directories here."""
    if not store.path:
        return Pruned([], 0)
    cutoff = None
    if keep_days:
        try:
            cutoff = (dt.datetime.now(dt.UTC) - dt.timedelta(days=keep_days)).isoformat()
        except OverflowError:  # before the first representable date: nothing is that old
            cutoff = None
    local, fleets, gathered = store.ended_runs(module_set)
    mine = _beyond(local, keep_runs, cutoff)
    doomed = mine + _beyond(fleets, keep_runs, cutoff) + _beyond(gathered, keep_runs, cutoff)
    size = sum(_size(log_dir / run_id) for run_id in mine)
    if dry_run or not doomed:
        return Pruned(doomed, size)
    store.forget_runs(doomed)
    for run_id in mine:
        shutil.rmtree(log_dir / run_id, ignore_errors=True)
    repair_latest(log_dir)
    return Pruned(doomed, size)


def _beyond(runs: list[tuple], keep_runs: int, cutoff: str | None) -> list[str]:
    """Of (run id, group, started) rows newest first: those past the newest `keep_runs`
    of their group, or started before `cutoff`."""
    seen: dict[str, int] = {}
    doomed = []
    for run_id, group, started in runs:
        seen[group] = seen.get(group, 0) + 1
        if (keep_runs and seen[group] > keep_runs) or (cutoff and (started or "") < cutoff):
            doomed.append(run_id)
    return doomed


def point_latest(run_dir: Path) -> None:
    """LOG_DIR/latest -> `run_dir` (a relative symlink, replaced atomically); nothing
    when the log directory will not take it."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(run_dir.name)
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def repair_latest(log_dir: Path) -> None:
    """After run directories went: LOG_DIR/latest -> the newest one left, or no link
    when none is left, never a link to a directory that is gone."""
    link = log_dir / "latest"
    if not link.is_symlink() or link.exists():
        return
    try:
        names = [
            e.name
            for e in os.scandir(log_dir)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
        ]
    except OSError:
        return
    if names:
        point_latest(log_dir / max(names))  # run ids begin with their UTC start
    else:
        with contextlib.suppress(OSError):
            link.unlink()


def _size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total
