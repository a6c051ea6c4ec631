"""The store as a run listener: every event becomes a row as it happens.

Rows are written when they happen (not at the end), so a crash or a kill keeps what
finished. A database that fails mid-run (disk full, removed) never stops the run:
the recorder says so once and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3

from corral.events import (
    RUNNING,
    Event,
    ModuleFinished,
    ModuleSkipped,
    ModuleStarted,
    Notice,
    RunFinished,
    RunStarted,
)
from corral.store import Store


def iso(t: float | None) -> str | None:
    """Stored timestamps: UTC ISO 8601 with milliseconds, so they sort as text."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


class Recorder:
    """Writes runs and module_runs rows; `failed` is set once a write did not happen."""

    def __init__(self, store: Store, modules_dirs: str, targets: str, emit_notice,
                 cache_hits: int = 0, cache_misses: int = 0):
        self.store = store
        self.modules_dirs = modules_dirs
        self.targets = targets
        self.notice = emit_notice
        self.cache = (cache_hits, cache_misses)
        self.rows: dict[tuple[str, int], int] = {}
        self.failed: str | None = None

    def __call__(self, event: Event) -> None:
        if self.failed is not None:
            return
        try:
            self._record(event)
        except sqlite3.Error as exc:
            self.failed = str(exc)
            self.notice(Notice(f"{self.store.path}: cannot record this run any more ({exc}); "
                               "the run goes on, see the logs", warning=True))

    def _record(self, event: Event) -> None:
        store = self.store
        if isinstance(event, ModuleStarted):
            self.rows[(event.name, event.attempt)] = store.insert_attempt({
                "run_id": self.run_id, "module": event.name, "attempt": event.attempt,
                "status": RUNNING, "start": iso(event.start), "pid": event.pid,
                "pgid": event.pid, "log_path": event.log_path,
                "throttle_wait_s": event.throttle_wait_s})
        elif isinstance(event, ModuleFinished):
            r = event.result
            values = {
                "status": r.status, "exit_code": r.exit_code, "signal": r.signal,
                "reason": r.reason or None, "end": iso(r.end), "duration_s": r.duration_s,
                "cpu_user_s": r.cpu_user_s, "cpu_sys_s": r.cpu_sys_s,
                "peak_rss_bytes": r.peak_rss_bytes, "read_bytes": r.read_bytes,
                "write_bytes": r.write_bytes, "log_bytes": r.log_bytes,
                "log_dropped_bytes": r.log_dropped_bytes,
                "log_incomplete": int(r.log_incomplete)}
            row = self.rows.pop((r.name, r.attempt), None)
            if row is None:  # it never started (spawn failed)
                store.insert_attempt({"run_id": self.run_id, "module": r.name,
                                      "attempt": r.attempt, "start": iso(r.start), **values})
            else:
                store.update_attempt(row, values)
        elif isinstance(event, ModuleSkipped):
            store.insert_attempt({"run_id": self.run_id, "module": event.name, "attempt": 0,
                                  "status": "skipped", "reason": event.reason})
        elif isinstance(event, RunStarted):
            self.run_id = event.run_id
            store.insert_run({
                "run_id": event.run_id, "started": iso(event.started), "status": RUNNING,
                "jobs": event.jobs, "modules_dir": self.modules_dirs, "targets": self.targets,
                "host": socket.gethostname(), "pid": os.getpid(), "boot_id": boot_id(),
                "module_count": len(event.names), "selected": len(event.names),
                "cache_hits": self.cache[0], "cache_misses": self.cache[1]})
        elif isinstance(event, RunFinished):
            work = sum(a.duration_s for m in event.modules for a in m.attempts)
            store.update_run(event.run_id, {
                "ended": iso(event.ended), "status": event.status, "exit_code": event.exit_code,
                "makespan_s": event.makespan_s, "work_s": work,
                "exit_signal": event.exit_code - 128 if event.exit_code > 128 else None})
