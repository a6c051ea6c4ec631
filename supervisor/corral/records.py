"""The store as a run listener: every event becomes a row as it happens.

Rows are written when they happen (not at the end), so a crash or a kill keeps what
finished. A database that fails mid-run (disk full, removed) never stops the run:
the recorder says so once and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import sqlite3
import threading

from corral.events import (
    Event,
    Idle,
    Leftovers,
    ModuleFinished,
    ModuleSkipped,
    ModuleStarted,
    Notice,
    RunFinished,
    RunStarted,
    Sampled,
)
from corral.procfs import start_time
from corral.status import COMPLETED, Status
from corral.store import Store

FLUSH_DELAY = 0.05  # seconds a record may wait to share a transaction


def iso(t: float | None) -> str | None:
    """Stored timestamps: UTC ISO 8601 with milliseconds, so they sort as text."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds")


def _text(value: object) -> str | None:
    """A refusal as stored: 'kind: detail'; None stays NULL."""
    return None if value is None else str(value)


def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


class Recorder:
    """Writes runs and module_runs rows; `failed` is set once a write did not happen.

    perf (docs/architecture.md): module rows go through a queue to a writer thread that
    commits whatever has arrived, at most FLUSH_DELAY after it arrived: a thousand
    one-millisecond modules cost a handful of transactions instead of a thousand, and the
    scheduler never waits for the disk. A killed corral loses at most the last
    FLUSH_DELAY of records; Ctrl-C, SIGTERM and the end of the run flush everything
    (RunFinished waits for the writer).
    """

    def __init__(
        self,
        store: Store,
        modules_dirs: str,
        targets: str,
        emit_notice,
        cache_hits: int = 0,
        cache_misses: int = 0,
        module_set: str | None = None,
        full: bool = True,
    ):
        self.store = store
        self.modules_dirs = modules_dirs
        self.module_set = module_set
        self.full = full
        self.targets = targets
        self.notice = emit_notice
        self.cache = (cache_hits, cache_misses)
        self.run_id = ""
        self.inserts: list[dict] = []
        self.updates: list[tuple[tuple, dict]] = []
        self.samples: list[dict] = []
        self.failed: str | None = None
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.closing = threading.Event()
        # how the run holds its attempts: {"containment": kind, "cgroups": directories}
        self.containment: dict = {}

    def __call__(self, event: Event) -> None:
        if self.failed is not None:
            if isinstance(event, RunFinished):
                self._stop_writer()
            return
        try:
            self._record(event)
        except sqlite3.Error as exc:
            self.failed = str(exc)
            self.notice(
                Notice(
                    f"{self.store.path}: cannot record this run any more ({exc}); "
                    "the run goes on, see the logs",
                    warning=True,
                )
            )

    def flush(self) -> None:
        """Hand what is buffered to the writer thread."""
        if self.inserts or self.updates or self.samples:
            self.queue.put((self.inserts, self.updates, self.samples))
            self.inserts, self.updates, self.samples = [], [], []

    def _write_loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self.closing.wait(FLUSH_DELAY)  # let a burst gather into one transaction
            inserts, updates, samples = list(item[0]), list(item[1]), list(item[2])
            stop = False
            while not self.queue.empty():
                more = self.queue.get()
                if more is None:
                    stop = True
                    break
                inserts += more[0]
                updates += more[1]
                samples += more[2]
            try:
                self.store.write_attempts(inserts, updates, samples)
            except sqlite3.Error as exc:
                if self.failed is None:
                    self.failed = str(exc)
                    self.notice(
                        Notice(
                            f"{self.store.path}: cannot record this run any more "
                            f"({exc}); the run goes on, see the logs",
                            warning=True,
                        )
                    )
            if stop:
                return

    def _stop_writer(self) -> None:
        if self.writer is not None:
            self.closing.set()
            self.queue.put(None)
            self.writer.join()
            self.writer = None

    def _record(self, event: Event) -> None:
        if isinstance(event, ModuleStarted):
            self.inserts.append(
                {
                    "run_id": self.run_id,
                    "module": event.name,
                    "attempt": event.attempt,
                    "status": Status.RUNNING,
                    "start": iso(event.start),
                    "pid": event.pid,
                    "pgid": event.pid,
                    "log_path": event.log_path,
                    "throttle_wait_s": event.throttle_wait_s,
                    "start_mono": event.start_mono,
                }
            )
        elif isinstance(event, ModuleFinished):
            r = event.result
            values = {
                "status": r.status,
                "exit_code": r.exit_code,
                "signal": r.signal,
                "reason": r.reason or None,
                "end": iso(r.end),
                "duration_s": r.duration_s,
                "cpu_user_s": r.cpu_user_s,
                "cpu_sys_s": r.cpu_sys_s,
                "peak_rss_bytes": r.peak_rss_bytes,
                "read_bytes": r.read_bytes,
                "write_bytes": r.write_bytes,
                "mem_source": r.mem_source,
                "cpu_source": r.cpu_source,
                "io_source": r.io_source,
                "log_path": r.log_path,
                "log_bytes": r.log_bytes,
                "log_dropped_bytes": r.log_dropped_bytes,
                "log_incomplete": int(r.log_incomplete),
                "throttle_wait_s": r.throttle_wait_s,
                "throttle_reason": _text(r.throttle_reason),
                "throttle_kind": None if r.throttle_reason is None else str(r.throttle_reason.kind),
                "lock_wait_s": r.lock_wait_s,
                "retry_in_s": r.retry_in,
            }
            if r.pid == 0:  # it never started (spawn failed)
                self.inserts.append(
                    {
                        "run_id": self.run_id,
                        "module": r.name,
                        "attempt": r.attempt,
                        "start": iso(r.start),
                        "start_mono": r.start_mono,
                        **values,
                    }
                )
            else:
                self.updates.append(((self.run_id, r.name, r.attempt), values))
        elif isinstance(event, ModuleSkipped):
            self.inserts.append(
                {
                    "run_id": self.run_id,
                    "module": event.name,
                    "attempt": 0,
                    "status": Status.SKIPPED,
                    "reason": event.reason,
                }
            )
        elif isinstance(event, Sampled):
            s = event.sample
            self.samples.append(
                {
                    "run_id": self.run_id,
                    "t": s.wall,
                    "mono": s.t,
                    "load1": s.load1,
                    "runnable": s.runnable,
                    "runnable_avg": s.runnable_avg,
                    "mem_available": s.mem_available,
                    "psi_cpu": s.psi_cpu,
                    "psi_mem": s.psi_mem,
                    "psi_io": s.psi_io,
                    "cpu_busy": s.cpu_busy,
                    "running": event.running,
                    "waiting": event.waiting,
                    "gate": _text(event.gate),
                }
            )
        elif isinstance(event, Leftovers):
            for (name, attempt), count in event.counts.items():
                self.updates.append(((self.run_id, name, attempt), {"leftovers": count}))
        elif isinstance(event, Idle):
            self.flush()
        elif isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.writer = threading.Thread(
                target=self._write_loop, name="corral-recorder", daemon=True
            )
            self.writer.start()
            self.store.insert_run(
                {
                    "run_id": event.run_id,
                    "started": iso(event.started),
                    "status": Status.RUNNING,
                    "jobs": event.jobs.fixed,  # NULL: auto
                    "modules_dir": self.modules_dirs,
                    "module_set": self.module_set,
                    "full": int(self.full),
                    "targets": self.targets,
                    "host": os.uname().nodename,
                    "pid": os.getpid(),
                    "boot_id": boot_id(),
                    "pid_start": start_time(os.getpid()),
                    "module_count": len(event.names),
                    "selected": len(event.names),
                    "cache_hits": self.cache[0],
                    "cache_misses": self.cache[1],
                    **self.containment,
                }
            )
            self.store.insert_edges(event.run_id, event.edges)
        elif isinstance(event, RunFinished):
            self.flush()
            self._stop_writer()
            work = sum(a.duration_s for m in event.modules for a in m.attempts)
            self.store.update_run(
                event.run_id,
                {
                    "ended": iso(event.ended),
                    "status": event.status,
                    "exit_code": event.exit_code,
                    "makespan_s": event.makespan_s,
                    "work_s": work,
                    "peak_load": event.peak_load,
                    "throttle_s": event.throttle_s,
                    "sampler_cpu_s": event.sampler_cpu_s,
                    "supervisor_cpu_s": event.supervisor_cpu_s,
                    "exit_signal": event.exit_code - 128 if event.exit_code > 128 else None,
                },
                [
                    (
                        m.name,
                        a.status in COMPLETED,
                        a.duration_s,
                        a.peak_rss_bytes,
                        None if a.cpu_user_s is None else a.cpu_user_s + (a.cpu_sys_s or 0.0),
                    )
                    for m in event.modules
                    for a in m.attempts
                ],
            )
